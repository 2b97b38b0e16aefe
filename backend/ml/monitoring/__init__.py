"""Monitoring served models: the ``monitor`` HTML report and drift statistics."""

from .commands import monitor_command
from .drift import categorical_psi, population_stability_index, vocabulary_shift
from .report import build_monitor, render_monitor

__all__ = ["build_monitor", "categorical_psi", "monitor_command", "population_stability_index",
           "render_monitor", "vocabulary_shift"]
