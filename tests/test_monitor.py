"""The monitor report: drift statistics, the numbers it shows, and the page in Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.ml.cli import main
from backend.ml.fileio import append_jsonl
from backend.ml.monitoring import (
    build_monitor,
    categorical_psi,
    population_stability_index,
    render_monitor,
    vocabulary_shift,
)
from backend.ml.serving.logs import PredictionLog, record_session
from support.browser import CHROMIUM, open_in_chromium
from support.multilingual_news import NEWS_BY_LANGUAGE
from support.runs import train_tiny

LABELS = ["Non-biased", "Biased", "No agreement"]


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift():
    training = list(range(5, 45)) * 10  # sentence lengths in words
    assert population_stability_index(training, training) == pytest.approx(0.0, abs=1e-9)
    assert population_stability_index(training, [length + 1 for length in training]) < 0.25
    assert population_stability_index(training, [60] * 100) > 0.25
    assert categorical_psi(["Biased", "Non-biased"] * 50, ["Biased"] * 50 + ["Non-biased"] * 50,
                           LABELS) == pytest.approx(0.0, abs=1e-9)
    assert categorical_psi(["Biased", "Non-biased"] * 50, ["Biased"] * 100, LABELS) > 0.25


def test_vocabulary_shift_counts_unseen_words():
    shift = vocabulary_shift(["The senate passed the bill."], ["The senate passed the bill.",
                                                               "Crypto zealots rejoice."])
    assert shift["oov_rate"] == pytest.approx(3 / 8)
    assert 0 < shift["js_distance"] < 1
    assert vocabulary_shift(["a b"], ["a b"])["js_distance"] == pytest.approx(0.0, abs=1e-7)


def record(run_id, version, key, label, served=True, words=12, confidence=0.8, time="10:00:00",
           language=None):
    probabilities = {name: (confidence if name == label else (1 - confidence) / 2)
                     for name in LABELS}
    logged = {"time": f"2026-11-25T{time}.000+00:00", "version": version, "run_id": run_id,
              "served": served, "key": key, "status": "ok", "label": label,
              "confidence": confidence, "probabilities": probabilities, "num_words": words,
              "latency_ms": 5.0}
    if language:
        logged.update(language=language, language_confidence=0.97,
                      supported_language=language == "en")
    return logged


@pytest.fixture(scope="module")
def served_run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("monitor") / "runs", "tiny_m", 1e-3)


def write_log(log_dir: Path, run_dir: Path) -> None:
    record_session(log_dir, {"versions": {"production": {"run_id": "tiny_m",
                                                         "run_dir": str(run_dir)}}})
    log = PredictionLog(log_dir)
    labels = ["Biased", "Biased", "Non-biased", "Biased"]
    for number, label in enumerate(labels):  # tiny_m serves k0-k3, "other" shadows them
        log.write([record("tiny_m", "production", f"id:k{number}", label),
                   record("other", "candidate", f"id:k{number}", "Biased", served=False)])
    log.write([record("other", "candidate", "id:k9", "Non-biased", words=40, time="11:30:00")])
    for key, label in (("id:k0", "Biased"), ("id:k1", "Non-biased"), ("id:k2", "Non-biased"),
                       ("id:unseen", "Biased")):
        append_jsonl(log_dir / "feedback.jsonl", {"key": key, "label": label})


def test_monitor_numbers_follow_the_log(served_run, tmp_path):
    write_log(tmp_path, served_run)
    data = build_monitor(tmp_path, tmp_path / "no-runs")
    runs = {run["run_id"]: run for run in data["runs"]}
    assert data["total_served"] == 5
    assert runs["tiny_m"]["served"] == 4 and runs["tiny_m"]["share"] == pytest.approx(0.8)
    assert runs["tiny_m"]["mix"]["Biased"] == pytest.approx(0.75)
    assert runs["other"]["served"] == 1 and runs["other"]["shadow"] == 4
    assert data["agreement"] == [{"first": "other", "second": "tiny_m", "n": 4,
                                  "agreement": 0.75}]
    accuracy = {row["run_id"]: row for row in data["accuracy"]}
    assert accuracy["tiny_m"]["n"] == 3 and accuracy["tiny_m"]["accuracy"] == pytest.approx(2 / 3)
    assert accuracy["other"]["n"] == 3 and accuracy["other"]["accuracy"] == pytest.approx(1 / 3)
    drift = {entry["run_id"]: entry for entry in data["drift"]}
    assert drift["tiny_m"]["length_psi"] > 0 and drift["tiny_m"]["vocabulary"] is None
    assert "run directory is not known" in drift["other"]["unavailable"]
    assert data["over_time"]["bucket"] == "hour"  # 90 minutes: too many one-minute points


def test_logged_values_are_escaped_in_the_page(tmp_path):
    PredictionLog(tmp_path).write([record("<script>alert(1)</script>", "production", "id:x",
                                          "Biased")])
    page = render_monitor(build_monitor(tmp_path, tmp_path))
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed at "
                                                  "/usr/bin/chromium (apt-get install chromium)")
def test_monitor_page_opens_in_chromium_and_shows_the_log(served_run, tmp_path):
    write_log(tmp_path / "log", served_run)
    report = tmp_path / "monitor.html"
    assert main(["monitor", "--log-dir", str(tmp_path / "log"), "--output", str(report)]) == 0
    errors, requests, shown = open_in_chromium(report)
    assert errors == []
    assert all(url.startswith(("file:", "data:")) for url in requests)
    assert dict(shown["served"]) == {"tiny_m": 4, "other": 1}
    assert dict(shown["accuracy_n"]) == {"tiny_m": 3, "other": 3}
    assert shown["agreement_rows"] == 1 and shown["charts"] == 3  # 2 over time, 1 drift


def test_monitor_without_predictions_says_what_to_do(tmp_path, capsys):
    assert main(["monitor", "--log-dir", str(tmp_path)]) == 1
    assert "no predictions logged in" in capsys.readouterr().err


def write_multilingual_log(log_dir: Path, run_dir: Path) -> None:
    """An hour of English traffic, then an hour in which German and French arrive; feedback in
    German and English."""
    record_session(log_dir, {"versions": {"production": {"run_id": "tiny_m",
                                                         "run_dir": str(run_dir)}}})
    log = PredictionLog(log_dir)
    log.write([record("tiny_m", "production", f"id:en{n}", "Biased", language="en")
               for n in range(10)])
    later = [("de", 6), ("fr", 2), ("en", 2)]
    log.write([record("tiny_m", "production", f"id:{code}{n}", "Biased", time="11:30:00",
                      language=code) for code, count in later for n in range(count)])
    log.write([{**record("tiny_m", "production", "id:de-abstained", "Biased", time="11:31:00",
                         language="de"), "status": "abstained", "label": None,
                "probabilities": None, "confidence": None}])
    for key, text in (("id:f1", NEWS_BY_LANGUAGE["de"][0]), ("id:f2", NEWS_BY_LANGUAGE["de"][1]),
                      ("id:f3", NEWS_BY_LANGUAGE["en"][0]), ("id:f4", None)):
        append_jsonl(log_dir / "feedback.jsonl", {"key": key, "text": text, "label": "Biased"})


def test_language_panel_flags_traffic_moving_away_from_the_training_languages(served_run,
                                                                              tmp_path):
    write_multilingual_log(tmp_path, served_run)
    panel = build_monitor(tmp_path, tmp_path / "no-runs")["languages"]
    assert panel["n"] == 21 and panel["abstained"] == 1
    assert panel["served"] == {"en": round(12 / 21, 4), "de": round(7 / 21, 4),
                               "fr": round(2 / 21, 4)}
    (run,) = panel["runs"]
    assert run["trained_on"] == ["en"]
    assert run["unsupported_share"] == pytest.approx(9 / 21)
    assert run["unsupported"] == {"de": 7, "fr": 2}
    assert run["drift"] is True and run["reading"] == "major shift"
    assert panel["feedback"] == {"n": 3, "without_text": 1,
                                 "mix": {"de": round(2 / 3, 4), "en": round(1 / 3, 4)}}
    english_only = tmp_path / "english"
    record_session(english_only, {"versions": {"production": {"run_id": "tiny_m",
                                                              "run_dir": str(served_run)}}})
    PredictionLog(english_only).write([record("tiny_m", "production", f"id:{n}", "Biased",
                                              language="en") for n in range(20)])
    (steady,) = build_monitor(english_only, tmp_path)["languages"]["runs"]
    assert steady["drift"] is False and steady["unsupported_share"] == 0


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed at "
                                                  "/usr/bin/chromium (apt-get install chromium)")
def test_language_panel_in_chromium(served_run, tmp_path):
    write_multilingual_log(tmp_path / "log", served_run)
    report = tmp_path / "monitor.html"
    assert main(["monitor", "--log-dir", str(tmp_path / "log"), "--output", str(report)]) == 0
    errors, _, shown = open_in_chromium(report, tmp_path / "shots" / "languages.png")
    assert errors == []
    (row,) = shown["language_rows"]
    assert row[:3] == ["tiny_m", "yes", "42.9% (de 7, fr 2): language drift"]
    assert row[3] == "rgb(187, 0, 0)"  # drawn as a warning
    assert dict(shown["feedback_languages"]) == {"de": "66.7%", "en": "33.3%"}
    assert shown["charts"] == 4  # 2 over time, 1 input length, 1 language mix
