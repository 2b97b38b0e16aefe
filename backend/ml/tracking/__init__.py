"""Experiment trackers behind one interface, chosen by name from the logging config."""

from __future__ import annotations

from pathlib import Path

from .base import JsonlMetricsTracker, Tracker, TrackerSet

__all__ = ["JsonlMetricsTracker", "Tracker", "TrackerSet", "build_trackers"]


def build_trackers(config, run_dir: Path) -> TrackerSet:
    """The tracker set for a run (``config`` is the ExperimentConfig): metrics.jsonl always,
    plus those ``config.logging`` switches on."""
    trackers: list[Tracker] = [JsonlMetricsTracker(Path(run_dir) / "metrics.jsonl")]
    return TrackerSet(trackers)
