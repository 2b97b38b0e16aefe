"""Experiment management: reading run directories, comparing runs, statistics, HTML report.

Everything here reads run directories only (see docs/architecture.md) and never imports the
trainer.

>>> from backend.ml.experiments import ExperimentManager, compare_command
"""

from .commands import compare_command
from .comparison import (
           aggregate_cross_validation,
           config_differences,
           format_comparison_table,
)
from .manager import ExperimentManager
from .rundir import RunInfo
from .statistics import bootstrap_confidence_intervals, mcnemar_test, paired_bootstrap

__all__ = ["ExperimentManager", "RunInfo", "aggregate_cross_validation",
           "bootstrap_confidence_intervals", "compare_command", "config_differences",
           "format_comparison_table", "mcnemar_test", "paired_bootstrap"]
