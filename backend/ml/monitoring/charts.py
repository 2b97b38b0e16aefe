"""The monitor's charts: matplotlib figures rendered as inline SVG, on time buckets that keep a
time axis to at most :data:`MAX_POINTS` points."""

from __future__ import annotations

import io
from datetime import datetime

TIME_BUCKETS = ((60, "minute"), (3600, "hour"), (86400, "day"))
MAX_POINTS = 40  # buckets on a time axis


def bucket_size(times: list[datetime]) -> tuple[int, str]:
    """(seconds, name) of the finest bucket that covers ``times`` in at most MAX_POINTS."""
    span = (max(times) - min(times)).total_seconds() if times else 0
    for seconds, name in TIME_BUCKETS:
        if span / seconds <= MAX_POINTS:
            return seconds, name
    return TIME_BUCKETS[-1]


def svg(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog: the SVG sits inside HTML


def figure(title: str, y_label: str):
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "monitor"})
    import matplotlib.pyplot as plt

    new_figure, axes = plt.subplots(figsize=(7, 3.2))
    axes.set_title(title)
    axes.set_ylabel(y_label)
    axes.grid(alpha=0.3)
    return new_figure, axes
