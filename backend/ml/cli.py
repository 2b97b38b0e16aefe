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

from .cli_flags import subcommand_argv
from .downloads.commands import add_models_subcommand
from .errors import ConfigError, UserError
from .languages import add_language_policy_argument
from .monitoring.commands import add_monitor_subcommand
from .pretraining.commands import add_pretrain_subcommand
from .run_directory import DEFAULT_RUNS_DIR
from .serving.commands import add_production_subcommands
from .training.interruption import TrainingInterrupted
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

# Test metrics every run reports, so any of them can rank runs and be tested pairwise.
COMPARED_METRICS = ("f1_macro", "f1_weighted", "accuracy", "f1_biased")


def _add_training_options(parser: argparse.ArgumentParser) -> None:
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


def _add_runs_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, metavar="DIR",
                        help="where run ids are looked up (default: experiments/runs)")


def _one_config(path: str) -> list[str]:
    # The cloud commands read the config list that CONFIG.yaml positionals used to fill.
    return [path]


def _add_cloud_settings(parser: argparse.ArgumentParser, runs_dir: bool) -> None:
    parser.add_argument("--config", dest="configs", type=_one_config, default=[],
                        metavar="CONFIG.yaml",
                        help="take cloud.project and cloud.bucket from this config")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field, e.g. --set cloud.project=ID")
    if runs_dir:
        parser.add_argument("--runs-dir", dest="output_dir", type=Path, metavar="DIR",
                            help="the local runs directory (default: the config's output_dir, "
                            "experiments/runs)")
    else:
        # The cloud commands' shared project lookup reads it; these commands write no run.
        parser.set_defaults(output_dir=None)


def _add_cloud_subcommands(sub) -> None:
    cloud = sub.add_parser("cloud", help="train on GCP GPU VMs and look after those runs "
                           "(see docs/cloud.md)", description="Cloud runs on GCP Compute Engine; "
                           "see docs/cloud.md.")
    commands = cloud.add_subparsers(dest="cloud_command", required=True,
                                    metavar="{launch,status,logs,cost,sync,teardown}")

    launch = commands.add_parser("launch", help="train configs on GPU VMs (cost estimate first)",
                                 description="Same as `run_experiment.py CONFIG.yaml ... --cloud`.")
    launch.set_defaults(handler=_cloud_launch)
    _add_training_options(launch)
    launch.add_argument("--yes", action="store_true", help="do not ask to confirm the cost")
    launch.add_argument("--detach", action="store_true",
                        help="return once the VM runs; fetch results later with `cloud sync`")
    launch.add_argument("--max-parallel", type=int, metavar="N",
                        help="with several configs or a sweep: VMs at once (default 4)")

    status = commands.add_parser("status", help="the project's training VMs and cloud runs")
    status.set_defaults(handler=_cloud_status)
    _add_cloud_settings(status, runs_dir=False)

    logs = commands.add_parser("logs", help="a cloud run's VM log from the bucket")
    logs.set_defaults(handler=_cloud_logs)
    logs.add_argument("cloud_logs", metavar="RUN_ID")
    logs.add_argument("--follow", action="store_true", help="keep printing until the run ends")
    _add_cloud_settings(logs, runs_dir=True)

    cost = commands.add_parser("cost", help="a cloud run's VM-hours and cost so far, next to "
                               "the estimate")
    cost.set_defaults(handler=_cloud_cost)
    cost.add_argument("cloud_cost", metavar="RUN_ID")
    _add_cloud_settings(cost, runs_dir=True)

    sync = commands.add_parser("sync", help="fetch a cloud run's results; --continue restarts a "
                               "stopped one")
    sync.set_defaults(handler=_cloud_sync)
    sync.add_argument("sync", metavar="RUN_ID")
    sync.add_argument("--continue", dest="cloud", action="store_true",
                      help="a preempted or stopped run: continue it from its last checkpoint on "
                      "a replacement VM")
    _add_cloud_settings(sync, runs_dir=True)

    teardown = commands.add_parser("teardown", help="delete the project's training VMs (or one "
                                   "run's)")
    teardown.set_defaults(handler=_cloud_teardown)
    teardown.add_argument("--run-id", metavar="ID", help="only this run's VMs")
    teardown.add_argument("--yes", action="store_true", help="do not ask to confirm")
    _add_cloud_settings(teardown, runs_dir=False)


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

    train = sub.add_parser("train", help="train and evaluate from configs (also: "
                           "run_experiment.py CONFIG.yaml)")
    train.set_defaults(handler=_train)
    _add_training_options(train)

    resume = sub.add_parser("resume", help="continue an interrupted run from its newest "
                            "checkpoint")
    resume.set_defaults(handler=_resume)
    resume.add_argument("run_dir", type=Path, metavar="RUN_DIR")

    compare = sub.add_parser("compare", help="comparison table and HTML report of runs")
    compare.set_defaults(handler=_compare)
    compare.add_argument("runs", nargs="*", metavar="RUN", help="run ids or directories (default: "
                         "every run)")
    compare.add_argument("--report", type=Path, metavar="FILE",
                         help="where the HTML report goes (default: comparison.html next to the "
                         "runs directory)")
    compare.add_argument("--metric", default="f1_macro", choices=COMPARED_METRICS,
                         help="the test metric that picks the best run (by its validation "
                              "value) and that the paired tests compare (default f1_macro; "
                              "the BABE paper protocol reports f1_weighted)")
    _add_runs_dir(compare)

    predict = sub.add_parser("predict", help="predict with a run's final model")
    predict.set_defaults(handler=_predict)
    predict.add_argument("run", metavar="RUN_ID_OR_PATH", help="run id, run dir or model dir")
    predict.add_argument("--input", type=Path, metavar="FILE", required=True,
                         help="sentences or articles to predict: .txt (one per line), .csv "
                         "(a text column) or .jsonl (objects with text)")
    predict.add_argument("--output", type=Path, metavar="OUT.jsonl", required=True,
                         help="where predictions are written")
    add_language_policy_argument(predict)
    _add_runs_dir(predict)

    export = sub.add_parser("export", help="export a run's final model for fast CPU inference")
    export.set_defaults(handler=_export)
    export.add_argument("run", metavar="RUN_ID_OR_PATH", help="run id, run dir or model dir")
    export.add_argument("--format", dest="export_format", nargs="+", default=["onnx", "int8"],
                        choices=("onnx", "int8"), help="export formats (default: onnx int8)")
    _add_runs_dir(export)

    help_config = sub.add_parser("help-config", help="list every config field with its default "
                                 "and help text")
    help_config.set_defaults(handler=_help_config)

    _add_cloud_subcommands(sub)
    add_pretrain_subcommand(sub)
    add_models_subcommand(sub)
    add_tune_subcommand(sub)
    add_production_subcommands(sub)
    add_monitor_subcommand(sub)
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


def _compare(args) -> int:
    from .experiments import compare_command
    return compare_command(args.runs, args.runs_dir, args.report, args.metric)


def _predict(args) -> int:
    from .inference.commands import predict_command
    return predict_command(args.run, args.input, args.output, args.runs_dir,
                           args.language_policy)


def _export(args) -> int:
    from .inference.commands import export_command
    return export_command(args.run, args.export_format, args.runs_dir)


def _help_config(args) -> int:
    print(config_reference())
    return 0


# The cloud handlers import backend.ml.cloud only when they run: the google-cloud clients are
# optional and slow to import.
def _cloud_target(args):
    from .cloud.commands import CloudTarget
    return CloudTarget(configs=list(args.configs or []), overrides=list(args.set or []),
                       runs_dir=args.output_dir)


def _cloud_launch(args) -> int:
    from .cloud.commands import cloud_run_command
    return cloud_run_command(_cloud_target(args), run_id=args.run_id, dry_run=args.dry_run,
                             yes=args.yes, detach=args.detach, max_parallel=args.max_parallel)


def _cloud_status(args) -> int:
    from .cloud.commands import cloud_status_command
    return cloud_status_command(_cloud_target(args))


def _cloud_logs(args) -> int:
    from .cloud.commands import cloud_logs_command
    return cloud_logs_command(_cloud_target(args), args.cloud_logs, follow=args.follow)


def _cloud_cost(args) -> int:
    from .cloud.commands import cloud_cost_command
    return cloud_cost_command(_cloud_target(args), args.cloud_cost)


def _cloud_sync(args) -> int:
    from .cloud.commands import sync_command
    return sync_command(_cloud_target(args), args.sync, continue_run=args.cloud)


def _cloud_teardown(args) -> int:
    from .cloud.commands import cloud_teardown_command
    return cloud_teardown_command(_cloud_target(args), run_id=args.run_id, yes=args.yes)


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
        print(f"\nInterrupted ({interruption}); a checkpoint was written and the run directory "
              f"is marked 'interrupted'. Continue it with: python run_experiment.py resume RUN_DIR",
              file=sys.stderr)
        return interruption.exit_code
    except KeyboardInterrupt:
        print("\nInterrupted; the run directory is marked 'interrupted'. Continue it with: "
              "python run_experiment.py resume RUN_DIR", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m backend.ml.cli: how tune starts its worker processes
    sys.exit(main())
