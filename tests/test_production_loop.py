"""The whole production loop on the demo data with tiny models, over real HTTP on loopback.

train two runs → promote → serve 50/50 (with shadow traffic) → predictions and feedback over
HTTP → monitor report (opened in headless Chromium) → retrain on the feedback → the new
candidate is compared with production on production's own test split.
"""

from __future__ import annotations

import csv
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from backend.ml.cli import main
from backend.ml.data.loading import DEMO_FILE, read_babe_file
from backend.ml.registry import ModelRegistry, production_test_set
from backend.ml.serving.app import create_app
from backend.ml.serving.logs import read_predictions
from backend.ml.serving.server import BackgroundServer, load_served_model
from backend.ml.serving.traffic import TrafficSplit
from support.browser import CHROMIUM, open_in_chromium
from support.cli import REPO_ROOT
from support.runs import train_tiny


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("production")
    train_tiny(root / "runs", "tiny_a", 1e-3)
    train_tiny(root / "runs", "tiny_b", 3e-3)
    return root


def cli(workspace: Path, *args: str) -> int:
    return main([*args, "--runs-dir", str(workspace / "runs"),
                 "--registry-dir", str(workspace / "registry")])


def demo_sentences() -> list[tuple[str, str]]:
    frame = read_babe_file(DEMO_FILE)
    return list(zip(frame["text"], frame["label"]))


@pytest.mark.slow
def test_train_promote_serve_feedback_monitor_retrain(workspace, capsys):
    runs, registry_dir, log_dir = workspace / "runs", workspace / "registry", workspace / "serving"

    # promote: tiny_a to production, tiny_b to candidate (compared on the same test split)
    assert cli(workspace, "promote", "tiny_a", "--as", "production", "--reason", "first") == 0
    assert cli(workspace, "promote", "tiny_b", "--as", "candidate", "--reason", "A/B") == 0
    registry = ModelRegistry(registry_dir)
    stages = registry.stages()
    assert stages["production"]["run_id"] == "tiny_a"
    assert stages["production"]["reason"] == "first" and stages["production"]["promoted_by"]
    test_texts, _, _ = production_test_set(runs / "tiny_a")
    assert stages["candidate"]["comparison"]["n"] == len(test_texts)
    assert stages["candidate"]["comparison"]["test_set"] == "test split of tiny_a"

    # serve production and candidate 50/50, with shadow predictions for agreement
    production = load_served_model("production", "production", runs, registry_dir)
    candidate = load_served_model("candidate", "candidate", runs, registry_dir)
    app = create_app(production, candidate, TrafficSplit(0.5), log_dir=log_dir, log_text=True,
                     shadow=True)
    sentences = demo_sentences()[:40]
    articles = [{"id": f"a-{number}", "text": text}
                for number, (text, _) in enumerate(sentences)]
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        def ask(chunk):
            response = client.post("/predict", json={"texts": chunk})
            assert response.status_code == 200, response.text
            return response.json()

        with ThreadPoolExecutor(8) as pool:  # concurrent requests share forward passes
            answers = [result for chunk in pool.map(ask, [articles[i:i + 2]
                                                          for i in range(0, 40, 2)])
                       for result in chunk]
        assert [answer["id"] for answer in answers] == [article["id"] for article in articles]
        versions = {answer["id"]: answer["version"] for answer in answers}
        assert 8 <= sum(version == "candidate" for version in versions.values()) <= 32
        assert all(answer["run_id"] == {"production": "tiny_a", "candidate": "tiny_b"}[
            answer["version"]] for answer in answers)
        again = ask(articles[:10])  # the same article always meets the same version
        assert [answer["version"] for answer in again] == [versions[f"a-{n}"] for n in range(10)]
        health = client.get("/health").json()  # shadow: both versions classified every input
        assert {name: batches["inputs"] for name, batches in health["batches"].items()} == {
            "production": 50, "candidate": 50}
        model = client.get("/model").json()
        assert model["candidate_share"] == 0.5
        assert model["versions"]["production"]["promotion"]["reason"] == "first"

        labelled = sentences[:20]
        for number, (text, label) in enumerate(labelled):
            response = client.post("/feedback", json={"id": f"a-{number}", "text": text,
                                                      "label": label, "source": "editor"})
            assert response.status_code == 201, response.text

    logged = read_predictions(log_dir)
    assert len(logged) == 2 * 50  # every input by both versions: 50 served, 50 shadow
    assert sum(record["served"] for record in logged) == 50

    # monitor
    report = workspace / "monitor.html"
    assert cli(workspace, "monitor", "--log-dir", str(log_dir), "--output", str(report)) == 0
    if CHROMIUM.exists():
        errors, requests, shown = open_in_chromium(report, REPO_ROOT / "test-artifacts" /
                                                   "monitor.png")
        assert errors == []
        assert all(url.startswith(("file:", "data:")) for url in requests)
        served = dict(shown["served"])
        assert served["tiny_a"] + served["tiny_b"] == 50
        assert served["tiny_b"] == sum(record["served"] and record["run_id"] == "tiny_b"
                                       for record in logged)
        assert dict(shown["accuracy_n"]) == {"tiny_a": 20, "tiny_b": 20}
        assert shown["agreement_rows"] == 1
        assert shown["charts"] == 5  # 2 over time, 2 drift, 1 of the served languages

    # retrain on the feedback; compare with production on production's test split
    assert cli(workspace, "retrain", "production", "--log-dir", str(log_dir),
               "--run-id", "tiny_a_retrain") == 0
    new_run = runs / "tiny_a_retrain"
    record = json.loads((new_run / "retrain.json").read_text())
    assert record["held_out_test_of"] == "tiny_a"
    held_out = set(test_texts)
    feedback_texts = {text for text, _ in labelled}
    with open(record["training_data"], encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream, delimiter=";"))
    assert not held_out & {row["text"] for row in rows}
    assert {row["text"] for row in rows if row["origin"] == "feedback"} == feedback_texts - held_out
    assert record["counts"]["feedback"] == len(feedback_texts - held_out)
    candidate_entry = ModelRegistry(registry_dir).stages()["candidate"]
    assert candidate_entry["run_id"] == "tiny_a_retrain"
    comparison = candidate_entry["comparison"]
    assert comparison["production_run"] == "tiny_a" and comparison["n"] == len(test_texts)
    assert comparison["bootstrap"]["difference"] == pytest.approx(
        comparison["candidate"]["f1_macro"] - comparison["production"]["f1_macro"], abs=1e-9)
    bootstrap = comparison["bootstrap"]
    assert comparison["candidate_better"] == (bootstrap["difference"] > 0 and
                                              bootstrap["p_value"] < comparison["alpha"])
    assert [entry["run_id"] for entry in ModelRegistry(registry_dir).history()] == [
        "tiny_a", "tiny_b", "tiny_a_retrain"]
    assert cli(workspace, "retrain", "--log-dir", str(log_dir), "--run-id", "tiny_a_retrain") == 1
    assert "tiny_a_retrain already exists; runs are never overwritten" in capsys.readouterr().err
