"""The HTML comparison report: one self-contained file (inline CSS, JS and SVG; no network).

The page is a jinja2 template (``templates/report.html.j2``, autoescaped); this module only
gathers the numbers into plain dicts and draws the charts with matplotlib as SVG.

>>> write_report(ExperimentManager("experiments/runs"), ["a_1", "b_2"],
...              Path("experiments/comparison.html"))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
from pathlib import Path

from ..fileio import atomic_write_text
from ..metrics import is_number
from ..report_kit import figure_svg, report_figure, template_environment
from .comparison import format_value, rank_runs, seed_groups
from .published import (
    is_binary_babe,
    protocol_differences,
    published_protocol,
    published_results,
)
from .rundir import RunInfo

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#7f7f7f", "#bcbd22")
PUBLISHED_COLOR = "#9aa3b5"
TABLE_COLUMNS = (  # (metric, header)
    ("test/accuracy", "test accuracy"), ("test/f1_macro", "test F1 macro"),
    ("test/f1_weighted", "test F1 weighted"), ("test/f1_biased", "test F1 Biased"),
    ("eval/f1_macro", "eval F1 macro"), ("eval/loss", "eval loss"))
CURVES = (("train/loss", "Training loss"), ("eval/loss", "Validation loss"),
          ("eval/f1_macro", "Validation F1 macro"))
TEMPLATE = "report.html.j2"


def write_report(manager, runs: list[RunInfo], output: Path, metric: str = "f1_macro",
                 comparison: dict | None = None) -> Path:
    """Compare ``runs`` and write the report atomically to ``output``; returns the path.

    ``metric`` (a test metric name such as ``f1_weighted``) picks the best run, by its validation
    value, and is the metric of the paired tests. ``comparison``: ``manager.compare_runs``'s
    result when the caller already has it.
    """
    output = Path(output)
    if comparison is None and runs:
        comparison = manager.compare_runs(runs, significance_metric=metric)
    atomic_write_text(output, render_report(runs, comparison, output.parent,
                                            manager.runs_dir, metric))
    return output


def render_report(runs: list[RunInfo], comparison: dict | None, report_dir: Path,
                  runs_dir: Path, metric: str = "f1_macro") -> str:
    """The report's HTML text; links to run directories are relative to ``report_dir``.

    >>> html = render_report([], None, Path("."), Path("experiments/runs"))
    >>> "No runs found in experiments/runs" in html
    True
    """
    colors = {run.run_id: PALETTE[index % len(PALETTE)] for index, run in enumerate(runs)}
    # Picked on validation where the runs have it: picking on the test split would overfit it.
    best_metric = f"eval/{metric}" if rank_runs(runs, f"eval/{metric}") else f"test/{metric}"
    ranked = rank_runs(runs, best_metric)
    best = ranked[0].run_id if ranked else None
    generated = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    context = {
        "subtitle": f"{len(runs)} run(s) from {runs_dir} · generated {generated}",
        "runs_dir": str(runs_dir), "has_runs": bool(runs), "comparison": comparison,
        "columns": [header for _, header in TABLE_COLUMNS],
        "best_metric": best_metric,
        "tested_metric": metric.replace("f1_", "F1 "),
        "rows": [_run_row(run, comparison, best, report_dir, colors) for run in runs],
        "published": _published(runs, colors),
        "problems": _problems(runs, comparison),
        "studies": _studies(runs_dir, report_dir),
        "seed_metric": f"test/{metric}",
        "seed_groups": _seed_groups(runs, f"test/{metric}", report_dir),
        "recipe_significance": (comparison or {}).get("recipe_significance", []),
    }
    if comparison:
        context.update(
            run_ids=[run.run_id for run in runs],
            config_differences=_config_differences(runs, comparison),
            curves=_learning_curves(runs, colors),
            matrices=_confusion_matrices(runs, comparison),
            per_class=_per_class(runs, comparison),
            slices=_slices(runs, comparison),
            significance=comparison.get("significance", []))
    return _environment().get_template(TEMPLATE).render(**context)


@functools.cache
def _environment():
    return template_environment("backend.ml.experiments")


# ---- runs table ------------------------------------------------------------------------

def _run_row(run: RunInfo, comparison, best, report_dir: Path, colors) -> dict:
    intervals = (comparison or {}).get("confidence_intervals", {}).get(run.run_id, {})
    cells = []
    for metric, _ in TABLE_COLUMNS:
        value = run.metric(metric)
        interval = intervals.get(metric.split("/")[-1]) if metric.startswith("test/") else None
        cells.append({"text": format_value(value, run.metric_std(metric)),
                      "sort": "" if value is None else repr(value),
                      "ci": interval if interval and interval.get("low") is not None else None})
    timing = run.results.get("timing")
    seconds = timing.get("total_seconds") if isinstance(timing, dict) else None
    return {
        "run_id": run.run_id, "color": colors[run.run_id], "is_best": run.run_id == best,
        "link": _run_link(run, report_dir),
        "folds": (len(run.folds) or run.cross_validation.get("num_folds", ""))
        if run.is_cross_validation else None,
        "paper_protocol": is_binary_babe(run) and not protocol_differences(run),
        "status": run.status, "display_status": run.display_status, "reason": run.reason or "",
        "tags": ", ".join(run.tags),
        "cells": cells,
        "seconds": {"text": format_value(seconds, digits=1) if seconds is not None else "-",
                    "sort": "" if seconds is None else repr(float(seconds))},
    }


def _published(runs: list[RunInfo], colors) -> dict | None:
    """Published BABE rows for the runs table, when some compared run is binary BABE."""
    babe_runs = [run for run in runs if is_binary_babe(run)]
    if not babe_runs:
        return None
    rows = []
    for result in published_results():
        cells = []
        for metric, _ in TABLE_COLUMNS:
            value = result.metric(metric)
            cells.append({"text": format_value(value, digits=3) if value is not None else "-",
                          "sort": "" if value is None else repr(value)})
        rows.append({"model": result.model, "source": result.source,
                     "reference": result.reference, "cells": cells})
    protocol = published_protocol()
    return {
        "rows": rows, "protocol": protocol,
        "references": sorted({result.reference for result in published_results()}),
        "matching": [run.run_id for run in babe_runs if not protocol_differences(run)],
        "differing": {run.run_id: protocol_differences(run) for run in babe_runs
                      if protocol_differences(run)},
        "chart": _published_chart(babe_runs, colors, protocol["metric"]),
    }


def _published_chart(runs: list[RunInfo], colors, metric: str):
    """Horizontal bars of ``metric``: published rows in grey, our runs in their colours."""
    bars: list[tuple[str, float, float | None, str]] = []  # (label, value, std, colour)
    for result in published_results():
        value = result.metric(metric)
        if value is not None:
            bars.append((f"{result.model} (published)", value, None, PUBLISHED_COLOR))
    for run in runs:
        value = run.metric(metric)
        if value is not None:
            bars.append((run.run_id, value, run.metric_std(metric), colors[run.run_id]))
    if not bars:
        return None
    bars.sort(key=lambda bar: bar[1])
    figure = report_figure(6.4, 0.9 + 0.32 * len(bars))
    axes = figure.subplots()
    positions = range(len(bars))
    axes.barh(positions, [bar[1] for bar in bars], color=[bar[3] for bar in bars],
              xerr=[bar[2] or 0 for bar in bars], error_kw={"ecolor": "#333", "capsize": 3})
    axes.set_yticks(positions, [bar[0] for bar in bars], fontsize=8)
    values = [bar[1] for bar in bars]
    axes.set_xlim(max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.03))
    for position, (_, value, _, _) in enumerate(bars):
        axes.text(value, position, f" {value:.3f}", va="center", fontsize=7)
    axes.set_xlabel(f"{metric} (mean over folds; bar = ±1 std)")
    axes.set_title("Weighted F1 on BABE SG2, binary: published vs these runs", fontsize=10)
    return figure_svg(figure, "published")


# ---- the other sections ----------------------------------------------------------------

def _config_differences(runs, comparison) -> list[dict]:
    rows = []
    for field, values in comparison.get("config_differences", {}).items():
        rows.append({"field": field,
                     "cells": [_short(values[run.run_id]) if run.run_id in values else None
                                for run in runs]})
    return rows


def _learning_curves(runs, colors) -> list[dict]:
    logs = {run.run_id: run.learning_curves() for run in runs}
    charts = []
    for key, title in CURVES:
        series = []
        for run in runs:
            points = [(record.get("step"), record.get(key)) for record in logs[run.run_id]]
            points = sorted((float(x), float(y)) for x, y in points
                            if _number(x) and _number(y))
            if points:
                series.append((run.run_id, colors[run.run_id], points))
        if series:
            charts.append({"title": title, "svg": line_chart(title, series, "step", key)})
    return charts


def line_chart(title: str, series, x_label: str, y_label: str):
    """Inline SVG (markupsafe.Markup) of ``series`` = ``[(name, color, [(x, y), ...]), ...]``.

    >>> str(line_chart("Loss", [("run_a", "#1f77b4", [(1, 0.9), (2, 0.5)])], "step", "loss"))[:4]
    '<svg'
    """
    figure = report_figure(4.4, 2.9 + 0.18 * min(len(series), 8))
    axes = figure.subplots()
    for name, color, points in series:
        axes.plot([x for x, _ in points], [y for _, y in points], color=color, linewidth=1.6,
                  marker="o" if len(points) <= 30 else None, markersize=3, label=name)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    return figure_svg(figure, title)


def _confusion_matrices(runs, comparison) -> list[dict]:
    blocks = []
    for run in runs:
        matrix = comparison["confusion_matrices"].get(run.run_id)
        names = comparison["label_names"].get(run.run_id) or []
        if not matrix or len(names) != len(matrix):
            continue
        rows = []
        for position, (name, counts) in enumerate(zip(names, matrix)):
            total = sum(counts) or 1
            cells = []
            for column, count in enumerate(counts):
                share = count / total
                hue = "46,125,50" if column == position else "198,40,40"  # green on the diagonal
                cells.append({"count": count, "title": f"{share:.0%} of {name}",
                              "background": f"rgba({hue},{0.08 + 0.8 * share:.2f})"})
            rows.append({"name": name, "cells": cells})
        blocks.append({"run_id": run.run_id, "names": names, "rows": rows})
    return blocks


def _per_class(runs, comparison) -> dict:
    labels = []
    for run in runs:
        for name in comparison["per_class"].get(run.run_id) or {}:
            if name not in labels:
                labels.append(name)
    rows = []
    for run in runs:
        per_class = comparison["per_class"].get(run.run_id) or {}
        if not per_class:
            continue
        cells = []
        for label in labels:
            scores = per_class.get(label) or {}
            cells.append({"precision": format_value(scores.get("precision"), digits=3),
                          "recall": format_value(scores.get("recall"), digits=3),
                          "f1": _bar(scores.get("f1"), f"support {scores.get('support', '?')}")})
        rows.append({"run_id": run.run_id, "cells": cells})
    return {"labels": labels, "rows": rows}


def _slices(runs, comparison) -> dict | None:
    slices = comparison.get("slices", {})
    if not any(slices.values()):
        return None
    runs = [run for run in runs if slices.get(run.run_id)]  # runs with sliceable predictions
    leanings = sorted({value for run_slices in slices.values()
                       for value in run_slices.get("type", {})})
    by_type = []
    for run in runs:
        scores_by_type = slices[run.run_id].get("type", {})
        if not scores_by_type:
            continue
        scores = {value: scores_by_type[value]["f1_macro"] for value in leanings
                  if value in scores_by_type}
        gap = ""
        if len(scores) > 1:
            high = max(scores, key=lambda value: scores[value])
            low = min(scores, key=lambda value: scores[value])
            gap = f"{scores[high] - scores[low]:.3f} ({high} > {low})"
        by_type.append({"run_id": run.run_id, "gap": gap,
                        "cells": [_slice_bar(scores_by_type.get(value, {}))
                                  for value in leanings]})
    columns = []
    for column, title in (("outlet", "By outlet"), ("topic", "By topic")):
        values = sorted({value for run_slices in slices.values()
                         for value in run_slices.get(column, {})})
        if values:
            columns.append({"column": column, "title": title, "rows": [
                {"value": value,
                 "cells": [_slice_bar(slices[run.run_id].get(column, {}).get(value, {}))
                           for run in runs]} for value in values]})
    return {"run_ids": [run.run_id for run in runs], "leanings": leanings, "by_type": by_type,
            "columns": columns}


def _problems(runs, comparison) -> list[dict]:
    items = [{"run_id": run.run_id, "status": run.display_status, "text": run.reason}
             for run in runs if run.status != "completed" and run.reason]
    for run_id, reason in ((comparison or {}).get("problems") or {}).items():
        items.append({"run_id": run_id, "status": None,
                      "text": f"no confidence intervals or slices: {reason}"})
    return items


def _seed_groups(runs: list[RunInfo], metric: str, report_dir: Path) -> list[dict]:
    """Recipes run at several seeds: mean ± sd over the seeds and each seed's run."""
    return [{
        "recipe": group.recipe,
        "splits": group.splits,
        "mean": f"{group.mean:.4f} ± {group.std:.4f}",
        "range": f"{group.values.min():.4f} to {group.values.max():.4f}",
        "runs": [{"run_id": run.run_id, "seed": seed, "value": f"{value:.4f}",
                  "link": _run_link(run, report_dir)}
                 for run, seed, value in zip(group.runs, group.seeds, group.values)],
    } for group in seed_groups(runs, metric)]


def _studies(runs_dir: Path, report_dir: Path) -> list[dict]:
    """The tuning studies written next to the runs (``tune``'s summaries), with their headline
    figures on held-out data and a link to each study page."""
    rows = []
    for summary_file in sorted((Path(runs_dir).parent / "studies").glob("*.json")):
        try:
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
            nested = summary["kind"] == "nested"
            test = summary["test"] if nested else summary["confirmation"]["test"]
            studies = ([fold["study"] for fold in summary["folds"]] if nested
                       else [summary["study"]])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a study still running, or not one of ours
        rows.append({
            "name": summary_file.stem,
            "link": os.path.relpath(summary_file.with_suffix(".html"), report_dir)
                      .replace(os.sep, "/"),
            "protocol": (f"nested CV, {len(studies)} outer folds" if nested else
                         f"confirmed on test, {test['f1_macro']['n']} seed(s)"),
            "f1_weighted": f"{test['f1_weighted']['mean']:.4f} ± {test['f1_weighted']['sd']:.4f}",
            "f1_macro": f"{test['f1_macro']['mean']:.4f} ± {test['f1_macro']['sd']:.4f}",
            "trials": sum(len(study["trials"]) for study in studies)})
    return rows


# ---- small helpers ---------------------------------------------------------------------

def _run_link(run: RunInfo, report_dir: Path) -> str:
    """The run directory's address relative to the report, as a link wants it."""
    return os.path.relpath(run.path, report_dir).replace(os.sep, "/") + "/"


def _bar(value, title: str) -> dict:
    if value is None:
        return {"value": None, "title": title}
    return {"value": float(value), "text": f"{value:.3f}", "title": title,
            "width": f"{max(0.0, min(1.0, float(value))) * 100:.0f}%"}


def _slice_bar(entry: dict) -> dict:
    return _bar(entry.get("f1_macro"), f"n={entry.get('n', 0)}")


def _short(value) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _number(value) -> bool:
    return is_number(value, finite=True)
