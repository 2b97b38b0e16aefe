"""``python run_experiment.py tune CONFIG.yaml``: an Optuna study over the config's ``search:``
section, searched on validation data and confirmed on the untouched test split."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import ConfigError, UserError

EPILOG = """examples:
  python run_experiment.py tune experiments/configs/babe_minilm_tune.yaml --dry-run
  python run_experiment.py tune experiments/configs/babe_minilm_tune.yaml --workers 2
  python run_experiment.py tune CONFIG.yaml --storage postgresql://user:pw@host/studies
  python run_experiment.py tune experiments/configs/babe_minilm_tune_nested.yaml --nested
Run the same command again to continue a stopped study. See docs/tuning.md."""


class TuningStopped(UserError):
    """A signal stopped a trial; the study is intact and the same command continues it."""


def add_tune_subcommand(sub) -> None:
    """Add ``tune`` to ``sub`` (``add_subparsers()``'s)."""
    parser = sub.add_parser(
        "tune", help="hyperparameter search (Optuna) on validation data, confirmed on test",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search the config's search.space with Optuna. Trials train on the training "
        "split and are scored on the validation split; the test split is removed before any "
        "trial. The best config is then trained with --confirm-seeds seeds and scored once on "
        "the test split; --nested instead searches inside each outer cross-validation fold.")
    parser.set_defaults(handler=tune_command)
    parser.add_argument("config", metavar="CONFIG.yaml", help="a config with a search: section")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field, e.g. --set search.trials=4")
    parser.add_argument("--output-dir", type=Path, metavar="DIR",
                        help="where trial run directories go (default: the config's output_dir);"
                        " the study's storage and page go to DIR/../studies/")
    parser.add_argument("--study", metavar="NAME",
                        help="study name (default: the config's experiment_name)")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna RDB URL shared by workers on many machines, e.g. "
                        "postgresql://user:pw@host/db (default: an SQLite file in studies/)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes on this machine sharing the study (default 1)")
    parser.add_argument("--confirm-seeds", type=int, default=3, metavar="K",
                        help="seeds the best config is trained with and scored on test "
                        "(default 3)")
    parser.add_argument("--nested", action="store_true",
                        help="nested cross-validation: search inside each outer fold's training "
                        "part, score its choice on the fold's test part (needs data.cv_folds)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the config and the search space; train nothing")
    # One worker process of --workers N: runs trials of one study and exits.
    parser.add_argument("--worker-fold", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)


def _checked_config(path: str, overrides: list[str], nested: bool):
    from ..config import load_yaml_config

    config = load_yaml_config(path, overrides)
    problems = []
    if not config.search.space:
        problems.append("search.space: is empty; name at least one field to search, e.g. "
                        "{training.learning_rate: {low: 1.0e-5, high: 1.0e-4, log: true}}")
    if config.data.cv_folds and not nested:
        problems.append("data.cv_folds: a cross-validation config is tuned with --nested (a "
                        "search inside each outer fold); or set data.cv_folds: 0 to search on "
                        "the validation split")
    if nested and not config.data.cv_folds:
        problems.append("data.cv_folds: --nested needs outer folds; set data.cv_folds (e.g. 5)")
    if problems:
        raise ConfigError(path, problems)
    return config


def _worker_command(args, plan):
    def command(fold: int, index: int) -> list[str]:
        overrides = [item for value in args.set for item in ("--set", value)]
        return [sys.executable, "-m", "backend.ml.cli", "tune", args.config, *overrides,
                "--output-dir", str(plan.runs_dir), "--study", plan.name, "--storage",
                plan.storage, "--worker-fold", str(fold), "--worker-index", str(index)]
    return command


def _describe(plan, args) -> str:
    from ..config import config_to_yaml
    from .space import search_direction, search_metric

    search = plan.config.search
    lines = ["Resolved config:", config_to_yaml(plan.config).rstrip(), "", "Plan:"]
    lines += [f"  search {dotted}: {spec}" for dotted, spec in search.space.items()]
    lines.append(f"  {search.trials} trials ({search.sampler} sampler, {search.pruner} pruner), "
                 f"{search_direction(plan.config)} validation {search_metric(plan.config)}, "
                 f"{args.workers} worker(s)")
    if args.nested:
        lines.append(f"  nested: one study per outer fold ({plan.config.data.cv_folds} folds), "
                     f"each fold's choice scored on its test part")
    else:
        lines.append(f"  then the best config with {args.confirm_seeds} seed(s), scored on the "
                     f"test split")
    trials = f"{plan.name}_fold-K_trial-NNN" if args.nested else f"{plan.name}_trial-NNN"
    lines.append(f"  trials: {plan.runs_dir}/{trials}; storage {plan.storage}")
    return "\n".join(lines)


def _print_result(summary: dict) -> None:
    test = summary["test"] if summary["kind"] == "nested" else summary["confirmation"]["test"]
    where = ("outer test folds (nested CV; each fold's search never read them)"
             if summary["kind"] == "nested" else
             f"test split, best config over seeds {summary['confirmation']['seeds']}")
    print(f"\nResult on the {where}:")
    for name, value in test.items():
        print(f"  {name:<12} {value['mean']:.4f} ± {value['sd']:.4f}")
    if summary["kind"] == "search":
        best = summary["study"]["best"]
        print(f"The search's own best, {summary['study']['metric']} {best['value']:.4f}, is "
              f"optimistic: it was chosen on those validation values.\nBest config: "
              f"{summary['best_config']}")
    print(f"Study page: {summary['page']}")


def tune_command(args) -> int:
    """Run ``tune`` with its parsed arguments; UserErrors reach the CLI's handler."""
    if args.workers < 1 or args.confirm_seeds < 1:
        raise UserError("--workers and --confirm-seeds must be at least 1")
    config = _checked_config(args.config, args.set, args.nested or bool(args.worker_fold))
    from .study import StudyPlan, run_worker, search_splits, tune, tune_nested

    plan = StudyPlan(config, args.study or config.experiment_name,
                     runs_dir=args.output_dir or Path(config.output_dir),
                     storage_url=args.storage)
    plan.launch_worker = _worker_command(args, plan)
    if args.dry_run:
        print(_describe(plan, args))
        print("\nConfig and search space are valid; nothing was trained (--dry-run).")
        return 0
    from ..training.interruption import TrainingInterrupted

    # Each trial is a whole run; its INFO lines (model built, plots written) would bury the one
    # line per trial. Warnings still show.
    logging.getLogger("backend.ml").setLevel(logging.WARNING)
    try:
        if args.worker_fold is not None:
            run_worker(plan, args.worker_fold, search_splits(config, args.worker_fold),
                       args.worker_index)
            return 0
        summary = (tune_nested(plan, args.workers) if args.nested
                   else tune(plan, args.workers, args.confirm_seeds))
    except TrainingInterrupted as interruption:
        raise TuningStopped(f"tune {interruption}; that trial is marked failed and will not "
                            f"count. The study is intact: run the same command to continue it.",
                            exit_code=interruption.exit_code) from None
    _print_result(summary)
    return 0
