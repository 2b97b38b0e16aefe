"""``python run_experiment.py``: train from YAML configs, compare runs, predict, run on GCP.

One parser with a subcommand per job, each bound to one handler. ``CONFIG.yaml [--cloud]`` without
a subcommand, and the mode flags that came before the subcommands, are rewritten to a subcommand
by ``cli_flags`` first. User mistakes (bad configs, bad data, unknown runs) are printed as plain
messages without a traceback; invalid configs and invalid command lines exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path

from .cli_flags import add_training_options, subcommand_argv
from .cloud.commands import add_cloud_subcommand
from .downloads.commands import add_models_subcommand
from .errors import ConfigError, UserError, resume_command
from .experiments.commands import add_compare_subcommand
from .inference.commands import add_inference_subcommands
from .monitoring.commands import add_monitor_subcommand
from .pretraining.commands import add_pretrain_subcommand
from .serving.commands import add_production_subcommands
from .training.interruption import RunStopped, TrainingInterrupted
from .tuning.commands import add_tune_subcommand

DESCRIPTION = """Train, evaluate, track and compare media-bias classifiers from YAML experiment \
configs.

`run_experiment.py CONFIG.yaml ...` is short for `train CONFIG.yaml ...`, and
`run_experiment.py CONFIG.yaml ... --cloud` for `cloud launch CONFIG.yaml ...`.
Each command has its own --help."""

EPILOG = """examples:
  python run_experiment.py experiments/configs/quickstart.yaml
  python run_experiment.py experiments/configs/quickstart.yaml --set training.epochs=1 --dry-run
  python run_experiment.py a.yaml b.yaml c.yaml            # run in turn, then compare
  python run_experiment.py resume experiments/runs/quickstart_minilm_3f9a1c
  python run_experiment.py compare                         # HTML report of every run
  python run_experiment.py predict RUN_ID --input news.txt --output predictions.jsonl
  python run_experiment.py experiments/configs/bert_baseline.yaml --cloud --dry-run
  python run_experiment.py cloud status                    # also: logs, cost, sync, teardown
  python run_experiment.py promote RUN_ID --as production  # then: serve, monitor, retrain
  python run_experiment.py serve production --port 8000
  python run_experiment.py pretrain experiments/configs/babe_minilm_dapt.yaml
  python run_experiment.py models fetch mpnet              # once, for model.model_name: mpnet
  python run_experiment.py tune experiments/configs/babe_minilm_tune.yaml --workers 2
"""

def _add_run_subcommands(sub) -> None:
    """`train` and `resume`: the commands of this module's own job."""
    train = sub.add_parser("train", help="train and evaluate from configs (also: "
                           "run_experiment.py CONFIG.yaml)")
    train.set_defaults(handler=_train)
    add_training_options(train)

    resume = sub.add_parser("resume", help="continue an interrupted run (or cross-validation "
                            "run) from its newest checkpoint")
    resume.set_defaults(handler=_resume)
    resume.add_argument("run_dir", type=Path, metavar="RUN_DIR")


def _add_help_config_subcommand(sub) -> None:
    help_config = sub.add_parser("help-config", help="list every config field with its default "
                                 "and help text")
    help_config.set_defaults(handler=_help_config)


# Every subcommand is added by one of these, in the order `--help` lists them; each package's
# `commands` module registers its own and imports its heavy code only when the command runs.
SUBCOMMAND_GROUPS = (_add_run_subcommands, add_compare_subcommand, add_inference_subcommands,
                     _add_help_config_subcommand, add_cloud_subcommand, add_pretrain_subcommand,
                     add_models_subcommand, add_tune_subcommand, add_production_subcommands,
                     add_monitor_subcommand)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one parser, a subparser per job."""
    return _parser_and_subcommands()[0]


def subcommand_names() -> tuple[str, ...]:
    """Every subcommand, as the parser registers them."""
    return tuple(_parser_and_subcommands()[1].choices)


def _parser_and_subcommands() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(prog="run_experiment.py", description=DESCRIPTION,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_subcommands in SUBCOMMAND_GROUPS:
        add_subcommands(sub)
    return parser, sub


def config_reference() -> str:
    """Every config field with its default and help, section by section."""
    from .config import ExperimentConfig

    lines = []

    def describe(instance, prefix: str) -> None:
        for item in fields(instance):
            value = getattr(instance, item.name)
            if is_dataclass(value):
                lines.append(f"\n{prefix}{item.name}:")
                describe(value, f"{prefix}{item.name}.")
                continue
            help_text = item.metadata.get("help", "")
            lines.append(f"  {prefix}{item.name} = {value!r}\n      {help_text}")

    describe(ExperimentConfig(), "")
    return "\n".join(lines)


def _load_configs(paths: list[str], overrides: list[str]):
    """Load, validate and expand every config; all problems of all files are reported together."""
    from .config import did_you_mean, expand_sweep, load_yaml_config

    loaded, problems = [], {}
    for path in paths:
        try:
            loaded.append((path, expand_sweep(load_yaml_config(path, overrides))))
        except ConfigError as error:
            problems[path] = error.problems
    if problems:  # reported before the model registry (torch, transformers) is imported
        _raise_config_problems(problems)
    from .model_factory import ModelFactory

    available = ModelFactory.available_models()
    configs = []
    for path, expanded in loaded:
        for config in expanded:
            architecture = config.model.architecture
            if architecture not in available:
                problems.setdefault(path, []).append(
                    f"model.architecture: unknown model {architecture!r}"
                    f"{did_you_mean(architecture, available)}; choose from {', '.join(available)}")
        configs.extend(expanded)
    if problems:
        _raise_config_problems(problems)
    return configs


def _raise_config_problems(problems: dict[str, list[str]]) -> None:
    if len(problems) == 1:
        ((path, listed),) = problems.items()
        raise ConfigError(path, listed)
    raise ConfigError(", ".join(problems), [f"{path}: {problem}" for path, listed in
                                            problems.items() for problem in listed])


def _train(args) -> int:
    configs = _load_configs(args.configs, args.set)
    if args.run_id and len(configs) > 1:
        raise UserError("--run-id names one run; give a single config without a sweep")
    from .run import describe_plan, run_cross_validation, run_experiment

    if args.dry_run:
        for config in configs:
            print(describe_plan(config))
            print()
        print(f"Config{'s are' if len(configs) > 1 else ' is'} valid; nothing was trained "
              f"(--dry-run).")
        return 0
    run_dirs, failures = [], []
    for config in configs:
        runner = run_cross_validation if config.data.cv_folds else run_experiment
        try:
            run_dirs.append(runner(config, args.output_dir, run_id=args.run_id))
        except (UserError, RuntimeError, ValueError, OSError) as error:
            if len(configs) == 1:
                raise
            failures.append((config.experiment_name, error))
            print(f"\nRun {config.experiment_name} failed: {error}\nContinuing with the next "
                  f"config.", file=sys.stderr)
    if len(configs) > 1:
        from .experiments import format_comparison_table
        if run_dirs:
            print("\n" + format_comparison_table(run_dirs))
        for name, failure in failures:
            print(f"FAILED {name}: {failure}")
    return 1 if failures else 0


def _resume(args) -> int:
    from .run import resume_run
    resume_run(args.run_dir)
    return 0


def _help_config(args) -> int:
    print(config_reference())
    return 0


def _quiet_libraries() -> None:
    # Progress bars and our own summaries say what matters; library chatter buries them.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "datasets", "urllib3", "filelock", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # transformers reads its verbosity from here when a handler first imports it; importing it
    # now would cost every command, --help and help-config included, seconds of start-up.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, subcommands = _parser_and_subcommands()
    # The first word that names a subcommand; anything else is CONFIG.yaml or a flag (cli_flags).
    if not argv or argv[0] not in (*subcommands.choices, "-h", "--help"):
        argv = subcommand_argv(argv)
    args = parser.parse_args(argv)
    try:
        _quiet_libraries()
        return args.handler(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except TrainingInterrupted as interruption:
        written = "a checkpoint was written and " if interruption.checkpoint_written else ""
        print(f"\nInterrupted ({interruption}); {written}the run directory is marked "
              f"'interrupted'. Continue it with: {resume_command(interruption.run_dir)}",
              file=sys.stderr)
        return interruption.exit_code
    except RunStopped as stopped:
        print(f"\nInterrupted; the run directory is marked 'interrupted'. Continue it with: "
              f"{resume_command(stopped.run_dir)}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m backend.ml.cli: how tune starts its worker processes
    sys.exit(main())
