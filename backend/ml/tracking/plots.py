"""The PNGs a person opens in a run directory, drawn from ``metrics.jsonl`` and ``results.json``.

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly, never
through pyplot, so nothing depends on a display or on the process-wide backend.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_path, read_jsonl
from ..run_directory import RunLayout, read_results_or_empty

logger = logging.getLogger(__name__)

PLOT_FILES = ("learning_curves.png", "confusion_matrix.png", "per_class_metrics.png")
DPI = 100


def _figure(width: float, height: float, columns: int = 1):
    from matplotlib.figure import Figure
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, columns)
    return figure, axes


def figure_to_array(figure) -> np.ndarray:
    """RGB pixels (height, width, 3, uint8) of a figure, for TensorBoard images."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(figure, path: Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``figure`` as PNG atomically; ``metadata`` goes into the PNG's text chunks."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(figure)
    text = {key: json.dumps(value) for key, value in (metadata or {}).items()}
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", metadata=text)
    return Path(path)


def _matrix_panel(axes, matrix: np.ndarray, label_names: list[str], title: str,
                  number_format: str) -> None:
    image = axes.imshow(matrix, cmap="Blues", vmin=0)
    axes.figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    ticks = range(len(label_names))
    axes.set_xticks(ticks, label_names, rotation=30, ha="right")
    axes.set_yticks(ticks, label_names)
    axes.set_xlabel("Predicted label")
    axes.set_ylabel("True label")
    axes.set_title(title)
    threshold = matrix.max() / 2 if matrix.size and matrix.max() > 0 else 0.5
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            value = matrix[row, column]
            axes.text(column, row, format(value, number_format), ha="center", va="center",
                      color="white" if value > threshold else "black")


def confusion_matrix_figure(matrix, label_names: list[str], title: str = "Confusion matrix"):
    """Counts (left) and row-normalised shares (right): rows are true labels.

    >>> figure = confusion_matrix_figure([[5, 1], [2, 7]], ["Non-biased", "Biased"])
    """
    counts = np.asarray(matrix, dtype=int)
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float),
                           where=totals > 0)
    figure, (left, right) = _figure(11, 4.8, columns=2)
    _matrix_panel(left, counts, label_names, "Counts", "d")
    _matrix_panel(right, normalised, label_names, "Share of each true label", ".2f")
    figure.suptitle(title)
    return figure


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(record["step"], record[key]) for record in records
              if isinstance(record.get(key), (int, float)) and "step" in record]
    return [step for step, _ in points], [value for _, value in points]


def learning_curves_figure(records: list[dict], title: str = "Learning curves"):
    """Train and eval loss (left); eval accuracy and F1 (right), over optimiser steps."""
    figure, (losses, scores) = _figure(12, 4.5, columns=2)
    for key, style in (("train/loss", "-"), ("eval/loss", "o-")):
        steps, values = _series(records, key)
        if steps:
            losses.plot(steps, values, style, label=key, markersize=4)
    losses.set_title("Loss")
    for key in ("eval/accuracy", "eval/f1_macro", "eval/f1_weighted"):
        steps, values = _series(records, key)
        if steps:
            scores.plot(steps, values, "o-", label=key, markersize=4)
    for key, marker in (("test/accuracy", "*"), ("test/f1_macro", "P")):
        steps, values = _series(records, key)
        if steps:
            scores.plot(steps, values, marker, label=key, markersize=11, linestyle="none")
    scores.set_title("Validation scores")
    scores.set_ylim(0, 1.02)
    for axes in (losses, scores):
        axes.set_xlabel("Optimiser step")
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(loc="best")
    figure.suptitle(title)
    return figure


def per_class_metrics_figure(per_class: dict[str, dict], title: str = "Per-class metrics"):
    """Grouped bars of precision, recall and F1 per class, support in the tick labels."""
    names = list(per_class)
    figure, axes = _figure(max(6, 2.2 * len(names) + 2), 4.5)
    width = 0.26
    positions = np.arange(len(names))
    for offset, metric in zip((-width, 0.0, width), ("precision", "recall", "f1")):
        values = [per_class[name].get(metric, 0.0) for name in names]
        bars = axes.bar(positions + offset, values, width, label=metric)
        axes.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
    axes.set_xticks(positions, [f"{name}\n(n={per_class[name].get('support', 0)})"
                                for name in names])
    axes.set_ylim(0, 1.1)
    axes.set_ylabel("Score")
    axes.legend(loc="upper right", ncols=3)
    axes.grid(axis="y", alpha=0.3)
    axes.set_title(title)
    return figure


def _final_split(results: dict) -> str | None:
    # The held-out test split is the honest picture; a run without one shows validation.
    for split in ("test", "eval"):
        section = results.get(split)
        if isinstance(section, dict) and section.get("confusion_matrix") is not None:
            return split
    return None


def write_run_plots(run_dir: str | Path) -> list[Path]:
    """Draw ``plots/learning_curves.png``, ``plots/confusion_matrix.png`` and
    ``plots/per_class_metrics.png`` from a run directory; returns the files written.

    A plot whose data is missing (no metrics yet, no final evaluation) is skipped.
    ``confusion_matrix.png`` carries the counts it draws in its PNG text chunk
    ``confusion_matrix`` (JSON), next to ``split`` and ``label_names``.

    >>> write_run_plots("experiments/runs/quickstart_minilm_3f9a1c")  # doctest: +SKIP
    [PosixPath('.../plots/learning_curves.png'), ...]
    """
    layout = RunLayout(Path(run_dir))
    plots = layout.plots
    written: list[Path] = []
    results = read_results_or_empty(layout.root)
    name = results.get("experiment_id") or layout.root.name

    metrics_path = layout.metrics
    records = read_jsonl(metrics_path) if metrics_path.exists() else []
    if records:
        figure = learning_curves_figure(records, title=f"Learning curves: {name}")
        written.append(save_figure(figure, plots / "learning_curves.png"))

    split = _final_split(results)
    if split is not None:
        section = results[split]
        label_names = section.get("label_names") or results.get("data", {}).get("label_names")
        matrix = section["confusion_matrix"]
        split_name = "test" if split == "test" else "validation (best model)"
        figure = confusion_matrix_figure(matrix, label_names,
                                         title=f"Confusion matrix, {split_name}: {name}")
        written.append(save_figure(figure, plots / "confusion_matrix.png",
                                   metadata={"confusion_matrix": matrix, "split": split,
                                             "label_names": label_names}))
        if section.get("per_class"):
            figure = per_class_metrics_figure(section["per_class"],
                                              title=f"Per-class metrics, {split_name}: {name}")
            written.append(save_figure(figure, plots / "per_class_metrics.png"))
    else:
        logger.info("No final evaluation in %s; confusion matrix and per-class plots skipped.",
                    layout.results)
    return written


class PlotsTracker:
    """Writes the run's PNGs once results.json is final (``log_summary``)."""

    def log_config(self, config: dict, run_info: dict) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_evaluation(self, evaluation, step: int) -> None:
        pass

    def log_model_graph(self, model, example_batch: dict) -> None:
        pass

    def log_summary(self, results: dict, run_dir: Path) -> None:
        for path in write_run_plots(run_dir):
            logger.info("Wrote %s", path)

    def close(self, status: str) -> None:
        pass
