"""The monitor's charts: figures of the report kit (inline SVG through
:func:`backend.ml.report_kit.figure_svg`), on time buckets that keep a time axis to at most
:data:`MAX_POINTS` points."""

from __future__ import annotations

from datetime import datetime

from ..report_kit import report_figure

TIME_BUCKETS = ((60, "minute"), (3600, "hour"), (86400, "day"))
MAX_POINTS = 40  # buckets on a time axis


def bucket_size(times: list[datetime]) -> tuple[int, str]:
    """(seconds, name) of the finest bucket that covers ``times`` in at most MAX_POINTS."""
    span = (max(times) - min(times)).total_seconds() if times else 0
    for seconds, name in TIME_BUCKETS:
        if span / seconds <= MAX_POINTS:
            return seconds, name
    return TIME_BUCKETS[-1]


def figure(title: str, y_label: str):
    """A monitor chart's figure and axes: titled, gridded, the report's size."""
    new_figure = report_figure(7, 3.2)
    axes = new_figure.subplots()
    axes.set_title(title)
    axes.set_ylabel(y_label)
    axes.grid(alpha=0.3)
    return new_figure, axes
