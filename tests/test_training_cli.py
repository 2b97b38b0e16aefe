"""End to end: a YAML config through the real CLI to a complete run directory, read back."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from backend.ml.run_directory import read_results
from support.cli import REPO_ROOT, cli_environment, run_cli
from support.configs import tiny_config, write_config
from support.runs import only_run_dir

# Every test here runs the real CLI in a subprocess, most of them training.
pytestmark = pytest.mark.slow

LABELS = ["Non-biased", "Biased", "No agreement"]


def read_predictions(run_dir: Path) -> list[dict]:
    with open(run_dir / "predictions" / "test_predictions.csv", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_run_directory_is_complete(tiny_run_dir):
    names = {path.name for path in tiny_run_dir.iterdir()}
    assert {"config.yaml", "results.json", "metrics.jsonl", "logs", "checkpoints",
            "final_model", "predictions"} <= names
    assert tiny_run_dir.name.startswith("tiny_") and len(tiny_run_dir.name) == len("tiny_") + 6
    saved = yaml.safe_load((tiny_run_dir / "config.yaml").read_text())
    assert saved["model"]["hidden_size"] == 32 and saved["seed"] == 7
    assert not list(tiny_run_dir.rglob("*.partial")) and not list(tiny_run_dir.rglob(".*.tmp"))


def test_results_hold_metadata_splits_and_metrics(tiny_run_dir):
    results = read_results(tiny_run_dir)
    assert results["status"] == "completed" and results["error"] is None
    assert results["experiment_id"] == tiny_run_dir.name
    metadata = results["metadata"]
    assert metadata["started_at"].endswith("+00:00") and metadata["finished_at"]
    assert metadata["torch_version"].startswith("2.13") and metadata["device"] == "cpu"
    assert {"python_version", "transformers_version", "host", "git_commit"} <= set(metadata)
    splits = results["data"]["splits"]
    assert sum(split["size"] for split in splits.values()) == 150
    for split in splits.values():
        assert sum(split["label_counts"].values()) == split["size"]
        assert set(split["label_counts"]) == set(LABELS)
    assert results["model"]["num_layers"] == 2 and results["model"]["hidden_size"] == 32
    assert results["model"]["total_parameters"] >= results["model"]["trainable_parameters"] > 0
    for split in ("eval", "test"):
        metrics = results[split]
        for name in ("accuracy", "f1_macro", "f1_weighted", "f1_biased", "loss"):
            assert name in metrics
        assert set(metrics["per_class"]) == set(LABELS)
        matrix = np.array(metrics["confusion_matrix"])
        expected_size = splits["validation" if split == "eval" else "test"]["size"]
        assert matrix.shape == (3, 3) and matrix.sum() == expected_size
        assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    training = results["training"]
    assert training["best_metric"] == "eval/f1_macro"
    assert training["best_value"] == pytest.approx(results["eval"]["f1_macro"])
    assert results["timing"]["train_samples_per_second"] > 0


def test_test_predictions_match_results(tiny_run_dir):
    results = read_results(tiny_run_dir)
    rows = read_predictions(tiny_run_dir)
    assert len(rows) == results["data"]["splits"]["test"]["size"]
    accuracy = np.mean([row["true_label"] == row["predicted_label"] for row in rows])
    assert accuracy == pytest.approx(results["test"]["accuracy"])
    for row in rows[:10]:
        probabilities = [float(row[f"prob_{slug}"]) for slug in
                         ("non_biased", "biased", "no_agreement")]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert float(row["confidence"]) == pytest.approx(max(probabilities), abs=1e-6)
        assert row["outlet"] and row["type"]


def test_final_model_loads_with_plain_transformers_and_reproduces_predictions(tiny_run_dir):
    path = tiny_run_dir / "final_model"
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.id2label == {0: "Non-biased", 1: "Biased", 2: "No agreement"}
    rows = read_predictions(tiny_run_dir)[:8]
    encoded = tokenizer([row["text"] for row in rows], padding=True, truncation=True,
                        max_length=64, return_tensors="pt")
    with torch.inference_mode():
        probabilities = model(**encoded).logits.softmax(-1).numpy()
    for row, row_probabilities in zip(rows, probabilities):
        assert model.config.id2label[int(row_probabilities.argmax())] == row["predicted_label"]
        assert float(row["prob_biased"]) == pytest.approx(row_probabilities[1], abs=1e-4)


def test_tensorboard_and_metrics_log_hold_the_curves(tiny_run_dir):
    records = [json.loads(line) for line in
               (tiny_run_dir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [record["step"] for record in records if "train/loss" in record]
    eval_records = [record for record in records if "eval/f1_macro" in record]
    assert train_steps == sorted(train_steps) and len(train_steps) >= 3
    assert len(eval_records) == 2  # one evaluation per epoch
    accumulator = EventAccumulator(str(tiny_run_dir / "logs")).Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "eval/loss", "eval/accuracy", "eval/f1_macro"} <= tags
    logged = [event.value for event in accumulator.Scalars("eval/f1_macro")]
    assert logged == pytest.approx([record["eval/f1_macro"] for record in eval_records])


def test_step_checkpoints_are_resumable(tiny_run_dir):
    checkpoints = sorted((tiny_run_dir / "checkpoints").glob("step-*"))
    assert checkpoints, "save_steps=4 must leave step checkpoints"
    state = torch.load(checkpoints[-1] / "training_state.pt", weights_only=False)
    assert {"optimizer", "scheduler", "rng", "global_step", "epoch"} <= set(state)
    assert (tiny_run_dir / "checkpoints" / "best" / "config.json").is_file()


def test_same_seed_same_metrics_and_resume_matches_uninterrupted(tmp_path, tiny_run_dir):
    config_path = write_config(tmp_path, tiny_config())
    run_cli(str(config_path), "--output-dir", str(tmp_path / "again"), check=True)
    again = only_run_dir(tmp_path / "again")
    first, second = read_results(tiny_run_dir), read_results(again)
    assert second["test"] == first["test"] and second["eval"] == first["eval"]

    # A crash mid-epoch after the oldest kept checkpoint: nothing later got written.
    oldest, *newer = sorted((again / "checkpoints").glob("step-*"))
    for checkpoint in newer:
        shutil.rmtree(checkpoint)
    shutil.rmtree(again / "final_model")
    shutil.rmtree(again / "predictions")
    crashed = read_results(again)
    crashed["status"] = "running"
    (again / "results.json").write_text(json.dumps(crashed))
    resumed = run_cli("resume", str(again), check=True)
    assert "Resuming" in resumed.stdout
    after = read_results(again)
    assert after["status"] == "completed"
    resumed_step = int(oldest.name.split("-")[1])
    assert after["metadata"]["resumed_from_step"] == resumed_step == 8  # mid-epoch 2 of 2
    assert after["test"] == first["test"] and after["eval"] == first["eval"]
    steps = [json.loads(line)["step"] for line in
             (again / "metrics.jsonl").read_text().splitlines()]
    original = [json.loads(line)["step"] for line in
                (tiny_run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == original  # points after the checkpoint are logged once, not twice


def test_existing_run_directory_is_never_overwritten(tmp_path):
    config_path = write_config(tmp_path, tiny_config())
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    (tmp_path / "runs" / "taken" / "note.txt").write_text("keep me")
    completed = run_cli(str(config_path), "--output-dir", str(tmp_path / "runs"),
                        "--run-id", "taken")
    assert completed.returncode == 1
    assert "already exists" in completed.stderr and "Traceback" not in completed.stderr
    assert [path.name for path in (tmp_path / "runs" / "taken").iterdir()] == ["note.txt"]


def test_invalid_config_exits_2_listing_every_problem(tmp_path):
    config_path = write_config(tmp_path, tiny_config(training={"learning_rate": -1,
                                                               "batchsize": 8}))
    completed = run_cli(str(config_path), "--output-dir", str(tmp_path / "runs"))
    assert completed.returncode == 2
    assert "training.learning_rate: must be > 0, got -1" in completed.stderr
    assert "did you mean 'batch_size'?" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_architecture_lists_the_choices(tmp_path):
    config_path = write_config(tmp_path, tiny_config(model={"architecture": "robreta"}))
    completed = run_cli(str(config_path), "--dry-run")
    assert completed.returncode == 2
    assert "did you mean 'roberta'?" in completed.stderr and "electra" in completed.stderr


def test_bad_data_file_names_file_and_problem(tmp_path):
    bad = tmp_path / "final_labels_SG2.csv"
    bad.write_text("\ufefftext;news_link;outlet;topic;type;label_opinion;biased_words\n"
                   "A sentence.;http://x;Outlet;topic;left;Entirely factual;[]\n",
                   encoding="utf-8")
    config_path = write_config(tmp_path, tiny_config(data={"dataset": "babe", "path": str(bad),
                                                           "max_samples": 0}))
    completed = run_cli(str(config_path), "--output-dir", str(tmp_path / "runs"))
    assert completed.returncode == 1
    assert str(bad) in completed.stderr and "label_bias" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_dry_run_prints_plan_and_trains_nothing(tmp_path):
    config_path = write_config(tmp_path, tiny_config())
    completed = run_cli(str(config_path), "--set", "training.epochs=3", "--dry-run",
                        "--output-dir", str(tmp_path / "runs"))
    assert completed.returncode == 0, completed.stderr
    assert "epochs: 3" in completed.stdout
    assert "train" in completed.stdout and "90 sentences" in completed.stdout
    assert "languages: en 100.0% of the training sentences; a model of them reads en" in \
        completed.stdout
    assert "nothing was trained" in completed.stdout
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_marks_the_run_interrupted(tmp_path):
    config_path = write_config(tmp_path, tiny_config(training={"epochs": 200},
                                                     logging={"tensorboard": False}))
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "run_experiment.py"),
                                str(config_path), "--output-dir", str(tmp_path / "runs")],
                               cwd=REPO_ROOT, env=cli_environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        logs = list((tmp_path / "runs").glob("*/metrics.jsonl"))
        if logs and logs[0].stat().st_size:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    run_dir = only_run_dir(tmp_path / "runs")
    assert f"run_experiment.py resume {run_dir}\n" in stderr and "Traceback" not in stderr
    assert read_results(run_dir)["status"] == "interrupted"


def test_binary_run_on_the_published_babe_files(tmp_path, babe_dir):
    config_path = write_config(tmp_path, tiny_config(
        model={"num_labels": 2}, training={"epochs": 1},
        data={"dataset": "babe", "path": str(babe_dir), "subset": "SG1",
              "filter_no_agreement": True, "max_samples": 150}))
    run_cli(str(config_path), "--output-dir", str(tmp_path / "runs"), check=True)
    run_dir = only_run_dir(tmp_path / "runs")
    results = read_results(run_dir)
    assert results["data"]["label_names"] == ["Non-biased", "Biased"]
    assert results["data"]["source"].endswith("final_labels_SG1.csv")
    assert np.array(results["test"]["confusion_matrix"]).shape == (2, 2)
    rows = read_predictions(run_dir)
    assert {row["true_label"] for row in rows} == {"Non-biased", "Biased"}
    assert {row["type"] for row in rows} <= {"left", "right", "center", ""}
    assert all(row["outlet"] and row["source_row"] for row in rows)
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "final_model")
    assert model.config.id2label == {0: "Non-biased", 1: "Biased"}

