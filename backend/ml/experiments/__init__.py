"""Experiment management: reading run directories, comparing runs, statistics, HTML report.

Everything here reads run directories only (see docs/architecture.md) and never imports the
trainer.

>>> from backend.ml.experiments import ExperimentManager, compare_command
"""

from ..lazy_exports import lazy_exports

__all__ = ["ExperimentManager", "RunInfo", "aggregate_cross_validation",
           "bootstrap_confidence_intervals", "compare_command", "config_differences",
           "format_comparison_table", "mcnemar_test", "paired_bootstrap", "recipe_bootstrap"]
# Imported on first use (pandas, scipy): the CLI's parser imports only ``.commands``.
__getattr__, __dir__ = lazy_exports(__name__, {
    "compare_command": ".commands", "aggregate_cross_validation": ".comparison",
    "config_differences": ".comparison", "format_comparison_table": ".comparison",
    "ExperimentManager": ".manager", "RunInfo": ".rundir",
    "bootstrap_confidence_intervals": ".statistics", "mcnemar_test": ".statistics",
    "paired_bootstrap": ".statistics", "recipe_bootstrap": ".statistics"})
