"""Monitoring served models: the ``monitor`` HTML report and drift statistics."""

from ..lazy_exports import lazy_exports

__all__ = ["add_monitor_subcommand", "build_monitor", "categorical_psi", "monitor_command",
           "population_stability_index", "render_monitor", "vocabulary_shift"]
# Imported on first use: the CLI's parser needs only add_monitor_subcommand, and the report
# draws with matplotlib.
__getattr__, __dir__ = lazy_exports(__name__, {
    "add_monitor_subcommand": ".commands", "monitor_command": ".commands",
    "build_monitor": ".report", "render_monitor": ".report", "categorical_psi": ".drift",
    "population_stability_index": ".drift", "vocabulary_shift": ".drift"})
