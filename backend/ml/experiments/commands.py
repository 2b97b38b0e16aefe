"""``run_experiment.py compare [RUN ...]``: print a comparison table and write the HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..run_directory import DEFAULT_RUNS_DIR

# Test metrics every run reports, so any of them can rank runs and be tested pairwise.
COMPARED_METRICS = ("f1_macro", "f1_weighted", "accuracy", "f1_biased")


def add_compare_subcommand(sub) -> None:
    """`compare [RUN ...]` on the CLI's subparsers."""
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
    compare.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, metavar="DIR",
                         help="where run ids are looked up (default: experiments/runs)")



def _compare(args: argparse.Namespace) -> int:
    return compare_command(args.runs, args.runs_dir, args.report, args.metric)


def compare_command(run_refs: list[str], runs_dir: Path, output: Path | None = None,
                    metric: str = "f1_macro") -> int:
    """Compare the named runs (all top-level runs when none), print a table, write the report.

    The report goes to ``output`` or ``runs_dir.parent / "comparison.html"``
    (``experiments/comparison.html`` by default). An unknown run id raises UserError naming
    it with the closest existing ids. ``metric`` picks the best run (by its validation value)
    and is the metric of the report's paired tests. Returns the exit status (0).

    >>> compare_command(["bert_v1_abc123", "distilbert_v1_def456"],
    ...                 Path("experiments/runs"))  # doctest: +SKIP
    """
    # The table, statistics and report need pandas and scipy: imported when a comparison runs.
    from .comparison import describe_recipe_test, format_runs_table
    from .manager import ExperimentManager
    from .report import write_report

    runs_dir = Path(runs_dir)
    manager = ExperimentManager(runs_dir)
    if run_refs:
        runs = [manager.load_run(reference) for reference in run_refs]
    else:
        runs = manager.list_runs()
    output = Path(output) if output is not None else runs_dir.parent / "comparison.html"
    comparison = None
    if not runs:
        print(f"No runs in {runs_dir}; the report lists none.")
    else:
        print(format_runs_table(runs, best_metric=f"eval/{metric}"))
        comparison = manager.compare_runs(runs, significance_metric=metric)
        tests = comparison["recipe_significance"]
        if tests:
            print(f"between recipes (mean test/{metric} over seeds on the same splits, "
                  f"two-level bootstrap):")
            print("\n".join(f"  {describe_recipe_test(test)}" for test in tests))
    write_report(manager, runs, output, metric, comparison)
    print(f"Comparison report: {output}")
    return 0
