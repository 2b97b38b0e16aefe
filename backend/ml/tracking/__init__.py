"""Experiment trackers behind one interface, chosen by name from the logging config."""

from __future__ import annotations

from pathlib import Path

from .base import JsonlMetricsTracker, Tracker, TrackerSet

__all__ = ["JsonlMetricsTracker", "Tracker", "TrackerSet", "build_trackers"]


def build_trackers(logging_config, run_dir: Path) -> TrackerSet:
    """The tracker set for a run: metrics.jsonl always, plus those the config switches on."""
    trackers: list[Tracker] = [JsonlMetricsTracker(Path(run_dir) / "metrics.jsonl")]
    return TrackerSet(trackers)
