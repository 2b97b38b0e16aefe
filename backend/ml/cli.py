"""``python run_experiment.py``: train from YAML configs, compare runs, predict, run on GCP.

User mistakes (bad configs, bad data, unknown runs) are printed as plain messages without a
traceback; invalid configs exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path

from .errors import ConfigError, UserError
from .run_directory import DEFAULT_RUNS_DIR
from .training.interruption import TrainingInterrupted

EPILOG = """examples:
  python run_experiment.py experiments/configs/quickstart.yaml
  python run_experiment.py experiments/configs/quickstart.yaml --set training.epochs=1 --dry-run
  python run_experiment.py a.yaml b.yaml c.yaml            # run in turn, then compare
  python run_experiment.py --compare                       # HTML report of every run
  python run_experiment.py --predict RUN_ID --input news.txt --output predictions.jsonl
  python run_experiment.py experiments/configs/bert_baseline.yaml --cloud --dry-run
  python run_experiment.py promote RUN_ID --as production     # then: serve, monitor, retrain
  python run_experiment.py serve production --port 8000       # see `serve --help`
  python run_experiment.py pretrain experiments/configs/babe_minilm_dapt.yaml   # pretrain --help
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_experiment.py", description="Train, evaluate, track and compare media-bias "
        "classifiers from YAML experiment configs.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", metavar="CONFIG.yaml",
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
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue an interrupted run from its newest checkpoint")
    parser.add_argument("--help-config", action="store_true",
                        help="list every config field with its default and help text")

    compare = parser.add_argument_group("comparing runs")
    compare.add_argument("--compare", nargs="*", metavar="RUN",
                         help="write experiments/comparison.html for these runs (all when none)")
    compare.add_argument("--report", type=Path, metavar="FILE",
                         help="where --compare writes the HTML report")

    predict = parser.add_argument_group("prediction and export")
    predict.add_argument("--predict", metavar="RUN_ID_OR_PATH",
                         help="predict with a run's final model (run id, run dir or model dir)")
    predict.add_argument("--input", type=Path, metavar="FILE",
                         help="sentences or articles to predict: .txt (one per line), .csv "
                         "(a text column) or .jsonl (objects with text)")
    predict.add_argument("--output", type=Path, metavar="OUT.jsonl",
                         help="where predictions are written")
    predict.add_argument("--export", metavar="RUN_ID_OR_PATH",
                         help="export a run's final model for fast CPU inference")
    predict.add_argument("--export-format", nargs="+", default=["onnx", "int8"],
                         choices=("onnx", "int8"), help="export formats (default: onnx int8)")

    cloud = parser.add_argument_group("cloud (GCP)")
    cloud.add_argument("--cloud", action="store_true",
                       help="train on a GCP GPU VM (cost estimate first; see docs/cloud.md)")
    cloud.add_argument("--yes", action="store_true", help="do not ask to confirm the cost")
    cloud.add_argument("--detach", action="store_true",
                       help="return once the VM runs; fetch results later with --sync")
    cloud.add_argument("--sync", metavar="RUN_ID", help="fetch a cloud run's results")
    cloud.add_argument("--cloud-status", action="store_true",
                       help="list the project's training VMs and cloud runs")
    cloud.add_argument("--cloud-teardown", action="store_true",
                       help="delete every training VM of the project")
    cloud.add_argument("--cloud-logs", metavar="RUN_ID",
                       help="print a cloud run's VM log from the bucket")
    cloud.add_argument("--follow", action="store_true",
                       help="with --cloud-logs: keep printing until the run ends")
    cloud.add_argument("--cloud-cost", metavar="RUN_ID",
                       help="a cloud run's VM-hours and cost so far, next to the estimate")
    cloud.add_argument("--max-parallel", type=int, metavar="N",
                       help="with several configs or a sweep and --cloud: VMs at once "
                       "(default 4)")
    return parser


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
    from .model_factory import ModelFactory

    available = ModelFactory.available_models()
    configs, problems = [], {}
    for path in paths:
        try:
            expanded = expand_sweep(load_yaml_config(path, overrides))
        except ConfigError as error:
            problems[path] = error.problems
            continue
        for config in expanded:
            architecture = config.model.architecture
            if architecture not in available:
                problems.setdefault(path, []).append(
                    f"model.architecture: unknown model {architecture!r}"
                    f"{did_you_mean(architecture, available)}; choose from {', '.join(available)}")
        configs.extend(expanded)
    if len(problems) == 1:
        ((path, listed),) = problems.items()
        raise ConfigError(path, listed)
    if problems:
        raise ConfigError(", ".join(problems), [f"{path}: {problem}" for path, listed in
                                                problems.items() for problem in listed])
    return configs


def _train(args) -> int:
    from .run import describe_plan, run_cross_validation, run_experiment

    configs = _load_configs(args.configs, args.set)
    if args.run_id and len(configs) > 1:
        raise UserError("--run-id names one run; give a single config without a sweep")
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
        for name, error in failures:
            print(f"FAILED {name}: {error}")
    return 1 if failures else 0


# Flags that each choose what the command does; at most one, and none beside CONFIG.yaml.
MODE_FLAGS = ("help_config", "compare", "predict", "export", "sync", "cloud_status",
              "cloud_teardown", "cloud_logs", "cloud_cost", "resume")
# Of those, the ones that read no config (the cloud ones may take one for project and bucket).
LOCAL_MODE_FLAGS = ("help_config", "compare", "predict", "export", "resume")
# Flags that only mean something next to another one.
DEPENDENT_FLAGS = {"follow": ("cloud_logs",), "max_parallel": ("cloud",),
                   "detach": ("cloud", "sync"), "input": ("predict",), "output": ("predict",),
                   "report": ("compare",), "dry_run": ("configs",),
                   "run_id": ("configs", "cloud_teardown")}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-") if name != "configs" else "CONFIG.yaml"


def reject_conflicting_flags(args, parser: argparse.ArgumentParser) -> None:
    """Flags that cannot go together are an error, never silently ignored."""
    modes = [name for name in MODE_FLAGS if getattr(args, name) not in (None, False)]
    if len(modes) > 1:
        parser.error(f"{' and '.join(_flag(name) for name in modes)} cannot be combined; "
                     f"run them one at a time")
    if modes and modes[0] in LOCAL_MODE_FLAGS and args.configs:
        parser.error(f"{_flag(modes[0])} does not take CONFIG.yaml ({args.configs[0]}); train "
                     f"and {_flag(modes[0])} in two commands")
    for name, needs in DEPENDENT_FLAGS.items():
        if getattr(args, name) not in (None, False) and not any(getattr(args, need) for need
                                                                 in needs):
            parser.error(f"{_flag(name)} only works with "
                         f"{' or '.join(_flag(need) for need in needs)}")


def _dispatch(args, parser) -> int:
    reject_conflicting_flags(args, parser)
    runs_dir = args.output_dir or DEFAULT_RUNS_DIR
    if args.help_config:
        print(config_reference())
        return 0
    if args.compare is not None:
        from .experiments import compare_command
        return compare_command(args.compare, runs_dir, args.report)
    if args.predict:
        if not args.input or not args.output:
            parser.error("--predict needs --input FILE and --output OUT.jsonl")
        from .inference.commands import predict_command
        return predict_command(args.predict, args.input, args.output, runs_dir)
    if args.export:
        from .inference.commands import export_command
        return export_command(args.export, args.export_format, runs_dir)
    if args.sync:
        from .cloud.commands import sync_command
        return sync_command(args)
    if args.cloud_status:
        from .cloud.commands import cloud_status_command
        return cloud_status_command(args)
    if args.cloud_teardown:
        from .cloud.commands import cloud_teardown_command
        return cloud_teardown_command(args)
    if args.cloud_logs:
        from .cloud.commands import cloud_logs_command
        return cloud_logs_command(args)
    if args.cloud_cost:
        from .cloud.commands import cloud_cost_command
        return cloud_cost_command(args)
    if args.resume:
        from .run import resume_run
        resume_run(args.resume)
        return 0
    if not args.configs:
        parser.error("give at least one CONFIG.yaml (or --compare, --predict, --sync, ...)")
    if args.cloud:
        from .cloud.commands import cloud_run_command
        return cloud_run_command(args)
    return _train(args)


def _quiet_libraries() -> None:
    # Progress bars and our own summaries say what matters; library chatter buries them.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "datasets", "urllib3", "filelock", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from transformers.utils import logging as transformers_logging
    transformers_logging.set_verbosity_error()


# Subcommands of the production loop; any other first word is a config (or a flag).
PRODUCTION_COMMANDS = ("serve", "promote", "registry", "monitor", "retrain")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "pretrain":
        from .pretraining.commands import pretrain_main

        def dispatch():
            return pretrain_main(argv[1:])
    elif argv and argv[0] in PRODUCTION_COMMANDS:
        from .serving.commands import production_main

        def dispatch():
            return production_main(argv)
    else:
        parser = build_parser()
        args = parser.parse_args(argv)

        def dispatch():
            return _dispatch(args, parser)
    try:
        _quiet_libraries()
        return dispatch()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except TrainingInterrupted as interruption:
        print(f"\nInterrupted ({interruption}); a checkpoint was written and the run directory "
              f"is marked 'interrupted'. Continue it with --resume RUN_DIR.", file=sys.stderr)
        return interruption.exit_code
    except KeyboardInterrupt:
        print("\nInterrupted; the run directory is marked 'interrupted'. Continue it with "
              "--resume RUN_DIR.", file=sys.stderr)
        return 130
