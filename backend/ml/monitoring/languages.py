"""The monitor's language panel: which languages the served traffic and the feedback are in,
over time, and whether traffic moved away from the languages each run was trained on.

A run's served traffic drifts in language when at least :data:`UNSUPPORTED_ALERT` of it is in
languages the run was not trained on, or when the population-stability index of its language
mix against its training split's reads a shift (the same 0.1 / 0.25 readings as the other PSIs).
Predictions logged before the server recorded languages are counted apart, never guessed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np

from ..languages import UNDETERMINED, detect_language, language_shares, read_training_languages
from ..report_kit import figure_svg
from ..run_directory import RunLayout
from .charts import bucket_size, figure
from .drift import psi_reading, shares_psi

UNSUPPORTED_ALERT = 0.05  # share of a run's traffic outside its training languages
CHARTED_LANGUAGES = 6  # the most frequent ones; the rest share one line


def _mix_over_time(records: list[dict]) -> str | None:
    """Chart of each language's share of served inputs per time bucket."""
    if not records:
        return None
    times = [datetime.fromisoformat(record["time"]) for record in records]
    seconds, name = bucket_size(times)
    start = min(times).timestamp()
    ranked = [code for code, _ in Counter(r["language"] for r in records).most_common()]
    shown = ranked[:CHARTED_LANGUAGES]
    buckets: defaultdict[int, list[str]] = defaultdict(list)
    for record, moment in zip(records, times):
        code = record["language"] if record["language"] in shown else "other"
        buckets[int((moment.timestamp() - start) // seconds)].append(code)
    keys = sorted(buckets)
    chart, axes = figure(f"Language of served inputs per {name}", "share of inputs")
    for code in shown + (["other"] if len(ranked) > len(shown) else []):
        axes.plot(keys, [buckets[key].count(code) / len(buckets[key]) for key in keys],
                  marker="o", label=code)
    axes.set_xlabel(f"{name}s since {min(times).isoformat(timespec='seconds')}")
    axes.set_ylim(-0.05, 1.05)
    axes.legend(fontsize=8, ncol=2)
    return figure_svg(chart, f"languages-{name}")


def _run_languages(run_id: str, records: list[dict], run_dir: Path | None) -> dict:
    """One run's served language mix against its training languages."""
    served = language_shares(record["language"] for record in records)
    entry: dict = {"run_id": run_id, "n": len(records), "served": served, "unavailable": None,
                   "drift": False}
    record = read_training_languages(RunLayout(run_dir).final_model) if run_dir else None
    if record is None:
        entry["unavailable"] = ("training languages not recorded (a run trained before runs "
                                "recorded them, or its run directory is not known)")
        return entry
    trained_on = record["languages"]
    unsupported = [r for r in records if r["language"] != UNDETERMINED
                   and r["language"] not in trained_on]
    psi = shares_psi(record["shares"], served)
    share = len(unsupported) / len(records)
    entry.update({"trained_on": trained_on, "training_shares": record["shares"],
                  "unsupported_share": share,
                  "unsupported": dict(Counter(r["language"] for r in unsupported).most_common()),
                  "psi": psi, "reading": psi_reading(psi),
                  "drift": share >= UNSUPPORTED_ALERT or psi_reading(psi) != "stable"})
    return entry


def _feedback_languages(feedback: list[dict]) -> dict:
    """Language mix of the labels readers sent with a text (the newest label per key)."""
    latest = {record.get("key") or record.get("text"): record for record in feedback}
    texts = [record["text"] for record in latest.values() if (record.get("text") or "").strip()]
    return {"n": len(texts), "without_text": len(latest) - len(texts),
            "mix": language_shares(detect_language(text).code for text in texts)}


def language_panel(predictions: list[dict], feedback: list[dict],
                   run_dirs: dict[str, Path | None]) -> dict:
    """The panel's numbers: served mix over time, per run against its training languages, and
    feedback's mix. ``predictions`` are the served records; those without a language (empty
    inputs, or logged before the server recorded languages) are only counted."""
    with_language = [record for record in predictions if record.get("language")]
    runs = sorted({record["run_id"] for record in with_language})
    return {
        "n": len(with_language), "without_language": len(predictions) - len(with_language),
        "alert_share": UNSUPPORTED_ALERT,
        "served": language_shares(record["language"] for record in with_language),
        "abstained": sum(1 for record in with_language if record.get("status") == "abstained"),
        "chart": _mix_over_time(with_language),
        "runs": [_run_languages(run_id, [r for r in with_language if r["run_id"] == run_id],
                                run_dirs.get(run_id)) for run_id in runs],
        "feedback": _feedback_languages(feedback),
        "mean_confidence": float(np.mean([r["language_confidence"] for r in with_language]))
        if with_language else None,
    }
