"""``run_experiment.py compare [RUN ...]``: print a comparison table and write the HTML report."""

from __future__ import annotations

from pathlib import Path

from .comparison import format_runs_table
from .manager import ExperimentManager
from .report import write_report


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
    runs_dir = Path(runs_dir)
    manager = ExperimentManager(runs_dir)
    if run_refs:
        runs = [manager.load_run(reference) for reference in run_refs]
    else:
        runs = manager.list_runs()
    output = Path(output) if output is not None else runs_dir.parent / "comparison.html"
    if not runs:
        print(f"No runs in {runs_dir}; the report lists none.")
    else:
        print(format_runs_table(runs, best_metric=f"eval/{metric}"))
    write_report(manager, runs, output, metric)
    print(f"Comparison report: {output}")
    return 0
