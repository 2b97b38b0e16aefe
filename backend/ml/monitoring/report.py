"""``monitor``: an HTML report of what the served models did, from the serving log directory.

Sections: traffic and latency per version, prediction mix and confidence over time, drift of
inputs against each run's training data (length PSI, predicted-label PSI, vocabulary shift),
agreement between versions on the same inputs, and accuracy where readers gave labels.
Charts are matplotlib SVG inlined into a jinja2 page (autoescaped); the page loads nothing.

>>> monitor_command(Path("experiments/serving"), None, Path("experiments/runs"))  # doctest: +SKIP
0
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..experiments.statistics import bootstrap_confidence_intervals, compute_metrics
from ..report_kit import figure_svg, template_environment
from ..run_directory import RunLayout
from ..serving.logs import read_feedback, read_predictions, read_sessions
from .charts import bucket_size, figure
from .drift import (
    categorical_psi,
    population_stability_index,
    psi_reading,
    vocabulary_shift,
)
from .languages import language_panel


def _training_data(run_dir: Path | None) -> tuple[list[str], list[str]] | str:
    """(texts, label names per text) of the run's training split, or why they are unavailable."""
    if run_dir is None or not RunLayout(run_dir).config.is_file():
        return "the run directory is not known (start the server with `serve`, which records it)"
    from ..config import load_yaml_config
    from ..data.splits import prepare_splits

    try:
        config = load_yaml_config(RunLayout(run_dir).config)
        splits = prepare_splits(config.data, config.seed)
    except UserError as error:
        return f"training data unavailable: {error}"
    return splits.train.texts, [splits.label_names[label] for label in splits.train.labels]


def _run_dirs(log_dir: Path) -> dict[str, Path]:
    """Run id -> run directory, as the server recorded them at each start."""
    found = {}
    for session in read_sessions(log_dir):
        for version in session.get("versions", {}).values():
            if version.get("run_dir"):
                found[version["run_id"]] = Path(version["run_dir"])
    return found


def _over_time(served: list[dict], label_names: list[str]) -> dict:
    times = [datetime.fromisoformat(record["time"]) for record in served]
    if not times:
        return {"charts": [], "bucket": None}
    seconds, name = bucket_size(times)
    start = min(times).timestamp()
    per_run: defaultdict[str, defaultdict[int, list[dict]]] = defaultdict(
        lambda: defaultdict(list))  # run -> time bucket -> records
    for record, moment in zip(served, times):
        per_run[record["run_id"]][int((moment.timestamp() - start) // seconds)].append(record)
    axis_label = f"{name}s since {min(times).isoformat(timespec='seconds')}"
    confidence, axes = figure(f"Mean confidence per {name}", "confidence")
    for run_id, buckets in sorted(per_run.items()):
        keys = sorted(buckets)
        axes.plot(keys, [np.mean([r["confidence"] for r in buckets[key]]) for key in keys],
                  marker="o", label=run_id)
    axes.set_xlabel(axis_label)
    axes.legend(fontsize=8)
    mix, axes = figure(f"Prediction mix per {name}", "share of predictions")
    styles = ("-", "--", ":", "-.")
    for position, (run_id, buckets) in enumerate(sorted(per_run.items())):
        keys = sorted(buckets)
        for color, label in enumerate(label_names):  # colour: label; line style: run
            axes.plot(keys, [np.mean([r["label"] == label for r in buckets[key]]) for key in keys],
                      marker="o", color=f"C{color}", linestyle=styles[position % len(styles)],
                      label=f"{label} ({run_id})")
    axes.set_xlabel(axis_label)
    axes.set_ylim(-0.05, 1.05)
    axes.legend(fontsize=7, ncol=2)
    charts = [figure_svg(confidence, f"confidence-{name}"), figure_svg(mix, f"mix-{name}")]
    return {"charts": charts, "bucket": name}


def _latency(records: list[dict]) -> tuple[float | None, float | None]:
    values = [record["latency_ms"] for record in records if record.get("latency_ms") is not None]
    if not values:
        return None, None
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def _drift(run_id: str, served: list[dict], run_dir: Path | None, label_names: list[str]) -> dict:
    entry: dict[str, object] = {"run_id": run_id, "n": len(served), "unavailable": None,
                                "chart": None}
    training = _training_data(run_dir)
    if isinstance(training, str):
        entry["unavailable"] = training
        return entry
    texts, labels = training
    training_lengths = [len(text.split()) for text in texts]
    served_lengths = [record["num_words"] for record in served]
    length_psi = population_stability_index(training_lengths, served_lengths)
    label_psi = categorical_psi(labels, [r["label"] for r in served], label_names)
    entry["length_psi"], entry["label_psi"] = length_psi, label_psi
    entry["training_mean_words"] = float(np.mean(training_lengths))
    entry["served_mean_words"] = float(np.mean(served_lengths))
    logged = [record["text"] for record in served if record.get("text")]
    entry["vocabulary"] = vocabulary_shift(texts, logged) if logged else None
    entry["readings"] = {"length": psi_reading(length_psi), "label": psi_reading(label_psi)}
    lengths, axes = figure(f"Input length, {run_id}", "share of inputs")
    upper = max(max(training_lengths), max(served_lengths)) + 1
    bins = np.linspace(0, upper, min(30, upper) + 1)
    axes.hist(training_lengths, bins=bins, density=True, alpha=0.5, label="training split")
    axes.hist(served_lengths, bins=bins, density=True, alpha=0.5, label="served")
    axes.set_xlabel("words")
    axes.legend(fontsize=8)
    entry["chart"] = figure_svg(lengths, f"lengths-{run_id}")
    return entry


def _agreement(predictions: list[dict]) -> list[dict]:
    """Pairs of runs that classified the same inputs (shadow traffic): how often they agree."""
    latest: defaultdict[str, dict[str, str]] = defaultdict(dict)  # key -> run -> label
    for record in predictions:
        latest[record["key"]][record["run_id"]] = record["label"]
    runs = sorted({record["run_id"] for record in predictions})
    pairs = []
    for first, second in itertools.combinations(runs, 2):
        shared = [labels for labels in latest.values() if first in labels and second in labels]
        if shared:
            agree = sum(labels[first] == labels[second] for labels in shared)
            pairs.append({"first": first, "second": second, "n": len(shared),
                          "agreement": agree / len(shared)})
    return pairs


def _accuracy(predictions: list[dict], feedback: list[dict], label_names: list[str]) -> list[dict]:
    """Per run, predictions of inputs a reader labelled against that label (newest label wins)."""
    truth = {record["key"]: record["label"] for record in feedback if record.get("key")}
    latest: defaultdict[str, dict[str, str]] = defaultdict(dict)  # run -> key -> label
    for record in predictions:
        if record["key"] in truth:
            latest[record["run_id"]][record["key"]] = record["label"]
    rows = []
    index = {name: position for position, name in enumerate(label_names)}
    for run_id, labelled in sorted(latest.items()):
        keys = [key for key in labelled if labelled[key] in index and truth[key] in index]
        gold = [index[truth[key]] for key in keys]
        predicted = [index[labelled[key]] for key in keys]
        metrics = compute_metrics(gold, predicted, label_names, ["accuracy", "f1_macro"])
        interval = bootstrap_confidence_intervals(gold, predicted, label_names, ["accuracy"])
        rows.append({"run_id": run_id, "n": len(keys), **metrics,
                     "low": interval["accuracy"]["low"], "high": interval["accuracy"]["high"]})
    return rows


def build_monitor(log_dir: Path, runs_dir: Path) -> dict:
    """Everything the report shows, as plain data (tests read it; the template renders it)."""
    logged = read_predictions(log_dir)
    predictions = [record for record in logged if record.get("status") == "ok"]
    if not predictions:
        raise UserError(f"no predictions logged in {log_dir}: serve a model with `serve` and "
                        "send requests first")
    feedback = read_feedback(log_dir)
    run_dirs = _run_dirs(log_dir)
    label_names = list(predictions[0]["probabilities"])
    served = [record for record in predictions if record.get("served", True)]
    runs = []
    for run_id in sorted({record["run_id"] for record in predictions}):
        own = [record for record in served if record["run_id"] == run_id]
        p50, p99 = _latency(own)
        mix = Counter(record["label"] for record in own)
        runs.append({"run_id": run_id,
                     "versions": sorted({record["version"] for record in own}),
                     "served": len(own), "share": len(own) / len(served),
                     "shadow": sum(1 for r in predictions if r["run_id"] == run_id
                                   and not r.get("served", True)),
                     "mean_confidence": float(np.mean([r["confidence"] for r in own]))
                     if own else None,
                     "mix": {label: mix.get(label, 0) / max(len(own), 1) for label in label_names},
                     "p50_ms": p50, "p99_ms": p99})
    return {
        "log_dir": str(log_dir), "generated_at": datetime.now().astimezone().isoformat(
            timespec="seconds"),
        "label_names": label_names, "total_served": len(served), "runs": runs,
        "first": min(r["time"] for r in predictions), "last": max(r["time"] for r in predictions),
        "texts_logged": any(record.get("text") for record in predictions),
        "over_time": _over_time(served, label_names),
        "drift": [_drift(run["run_id"], [r for r in served if r["run_id"] == run["run_id"]],
                         run_dirs.get(run["run_id"]) or _default_run_dir(runs_dir, run["run_id"]),
                         label_names) for run in runs if run["served"]],
        "agreement": _agreement(predictions),
        "feedback_count": len(feedback),
        "accuracy": _accuracy(predictions, feedback, label_names),
        "languages": language_panel(
            [record for record in logged if record.get("served", True)], feedback,
            {run["run_id"]: run_dirs.get(run["run_id"]) or _default_run_dir(runs_dir,
                                                                             run["run_id"])
             for run in runs}),
    }


def _default_run_dir(runs_dir: Path, run_id: str) -> Path | None:
    candidate = Path(runs_dir) / run_id
    return candidate if candidate.is_dir() else None


def render_monitor(data: dict) -> str:
    environment = template_environment("backend.ml.monitoring", filters={
        "pct": lambda value: "–" if value is None else f"{value:.1%}",
        "num": lambda value, digits=3: "–" if value is None else f"{value:.{digits}f}"})
    return environment.get_template("monitor.html").render(**data)
