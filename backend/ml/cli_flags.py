"""The command lines without a subcommand word, rewritten to the subcommand they stand for.

``CONFIG.yaml ... [--cloud]`` is the documented front door: ``train`` (``cloud launch`` with
``--cloud``). The mode flags that came before the subcommands (``--compare``, ``--resume``,
``--predict``, ``--sync``, ``--cloud-status`` ...) stay in users' scripts, so they still work, with
a one-line note naming the new form. Flags that cannot go together are an error (exit 2) naming
them, never dropped: the rewritten command line carries every flag that was given.

>>> subcommand_argv(["--compare", "run_a", "--output-dir", "runs"])  # doctest: +SKIP
['compare', 'run_a', '--runs-dir', 'runs']
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

USAGE = ("run_experiment.py CONFIG.yaml ... [--set SECTION.FIELD=VALUE] [--cloud] ...\n"
         "       run_experiment.py COMMAND ...  (see run_experiment.py --help)")


@dataclass(frozen=True)
class FlagForm:
    """One flag-form command line and the subcommand it is rewritten to."""

    label: str  # how messages name this form
    subcommand: tuple[str, ...]
    selector: str  # the parsed flag that chooses this form
    positional: str | None  # the parsed flag whose value becomes the positional argument(s)
    options: dict[str, str]  # every other flag it takes -> the subcommand's option for it
    deprecated: bool = True


TRAINING_OPTIONS = {"set": "--set", "output_dir": "--output-dir", "dry_run": "--dry-run",
                    "run_id": "--run-id"}
CLOUD_SETTINGS = {"configs": "--config", "set": "--set"}

TRAIN = FlagForm("CONFIG.yaml", ("train",), "configs", "configs", TRAINING_OPTIONS,
                 deprecated=False)
CLOUD_LAUNCH = FlagForm("--cloud", ("cloud", "launch"), "cloud", "configs",
                        {**TRAINING_OPTIONS, "yes": "--yes", "detach": "--detach",
                         "max_parallel": "--max-parallel"}, deprecated=False)
# In the order the "cannot be combined" message names them.
MODE_FORMS = (
    FlagForm("--help-config", ("help-config",), "help_config", None, {}),
    FlagForm("--compare", ("compare",), "compare", "compare",
             {"output_dir": "--runs-dir", "report": "--report"}),
    FlagForm("--predict", ("predict",), "predict", "predict",
             {"input": "--input", "output": "--output", "output_dir": "--runs-dir"}),
    FlagForm("--export", ("export",), "export", "export",
             {"export_format": "--format", "output_dir": "--runs-dir"}),
    FlagForm("--sync", ("cloud", "sync"), "sync", "sync",
             {**CLOUD_SETTINGS, "output_dir": "--runs-dir", "cloud": "--continue"}),
    FlagForm("--cloud-status", ("cloud", "status"), "cloud_status", None, CLOUD_SETTINGS),
    FlagForm("--cloud-teardown", ("cloud", "teardown"), "cloud_teardown", None,
             {**CLOUD_SETTINGS, "run_id": "--run-id", "yes": "--yes"}),
    FlagForm("--cloud-logs", ("cloud", "logs"), "cloud_logs", "cloud_logs",
             {**CLOUD_SETTINGS, "output_dir": "--runs-dir", "follow": "--follow"}),
    FlagForm("--cloud-cost", ("cloud", "cost"), "cloud_cost", "cloud_cost",
             {**CLOUD_SETTINGS, "output_dir": "--runs-dir"}),
    FlagForm("--resume", ("resume",), "resume", "resume", {}),
)
# Options that take one value and are repeated for several; the others take a list.
REPEATED_OPTIONS = ("--set",)


def build_flag_parser() -> argparse.ArgumentParser:
    """Every flag of the flag form; only read here, so it has no help of its own."""
    parser = argparse.ArgumentParser(prog="run_experiment.py", usage=USAGE, add_help=False)
    parser.add_argument("configs", nargs="*", default=[])
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--output-dir", type=Path)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--run-id")
    parser.add_argument("--resume", type=Path)
    parser.add_argument("--help-config", action="store_true")
    parser.add_argument("--compare", nargs="*")
    parser.add_argument("--report", type=Path)
    parser.add_argument("--predict")
    parser.add_argument("--input", type=Path)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--export")
    parser.add_argument("--export-format", nargs="+", default=["onnx", "int8"],
                        choices=("onnx", "int8"))
    parser.add_argument("--cloud", action="store_true")
    parser.add_argument("--yes", action="store_true")
    parser.add_argument("--detach", action="store_true")
    parser.add_argument("--sync")
    parser.add_argument("--cloud-status", action="store_true")
    parser.add_argument("--cloud-teardown", action="store_true")
    parser.add_argument("--cloud-logs")
    parser.add_argument("--follow", action="store_true")
    parser.add_argument("--cloud-cost")
    parser.add_argument("--max-parallel", type=int)
    return parser


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-") if name != "configs" else "CONFIG.yaml"


def _takes(form: FlagForm, name: str) -> bool:
    return name in (form.selector, form.positional, *form.options)


def _choose_form(given: dict, parser: argparse.ArgumentParser) -> FlagForm:
    modes = [form for form in MODE_FORMS if form.selector in given]
    if len(modes) > 1:
        parser.error(f"{' and '.join(form.label for form in modes)} cannot be combined; run "
                     f"them one at a time")
    if modes:
        return modes[0]
    if "configs" not in given:
        parser.error("give CONFIG.yaml or a command (see run_experiment.py --help)")
    return CLOUD_LAUNCH if "cloud" in given else TRAIN


def _reject_foreign_flags(form: FlagForm, given: dict, parser: argparse.ArgumentParser) -> None:
    for name in given:
        if _takes(form, name):
            continue
        if name == "configs":
            parser.error(f"{form.label} does not take CONFIG.yaml ({given['configs'][0]}); train "
                         f"and {form.label} in two commands")
        # --cloud, the flag choosing cloud launch, goes with CONFIG.yaml.
        others = [_flag(other.positional or "") if name == other.selector else other.label
                  for other in (TRAIN, CLOUD_LAUNCH, *MODE_FORMS)
                  if other is not form and _takes(other, name)]
        parser.error(f"{_flag(name)} only works with {' or '.join(others)}, not with "
                     f"{form.label}")
    if form.options.get("configs") == "--config" and len(given.get("configs", [])) > 1:
        parser.error(f"{form.label} reads one CONFIG.yaml (for the project and bucket), got "
                     f"{len(given['configs'])}")


def _rendered(option: str, value) -> list[str]:
    if value is True:
        return [option]
    if not isinstance(value, list):
        return [option, str(value)]
    if option in REPEATED_OPTIONS:
        return [token for item in value for token in (option, str(item))]
    return [option, *map(str, value)]


def subcommand_argv(argv: list[str]) -> list[str]:
    """The subcommand command line that ``argv`` (flag form) stands for; exit 2 on a conflict."""
    if "-h" in argv or "--help" in argv:
        return ["--help"]
    parser = build_flag_parser()
    args = parser.parse_args(argv)
    given = {name: value for name, value in vars(args).items()
             if value != parser.get_default(name)}
    form = _choose_form(given, parser)
    _reject_foreign_flags(form, given, parser)
    rewritten = list(form.subcommand)
    if form.positional is not None:
        value = given.get(form.positional, [])
        rewritten += map(str, value) if isinstance(value, list) else [str(value)]
    for name, option in form.options.items():
        if name in given:
            rewritten += _rendered(option, given[name])
    if form.deprecated:
        print(f"note: {form.label} is deprecated; use: run_experiment.py "
              f"{shlex.join(rewritten)}", file=sys.stderr)
    return rewritten


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """The options of `train`, which `cloud launch` shares: configs, --set, --output-dir,
    --dry-run, --run-id."""
    parser.add_argument("configs", nargs="+", metavar="CONFIG.yaml",
                        help="experiment configs; several run in turn and end with a comparison")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field, e.g. --set training.epochs=1 (repeatable)")
    parser.add_argument("--output-dir", type=Path, metavar="DIR",
                        help="where run directories go (default: the config's output_dir, "
                        "experiments/runs)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and print the resolved config and the plan; train nothing")
    parser.add_argument("--run-id", metavar="ID",
                        help="use exactly this run directory name instead of <name>_<random id>")
