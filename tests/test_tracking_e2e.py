"""What a real CLI run leaves for a person and their tools: TensorBoard events, metrics.jsonl,
predictions, plots and an offline W&B run, each read back and checked against results.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from backend.ml.fileio import read_jsonl
from backend.ml.metrics import label_slug
from backend.ml.run_directory import read_results
from support.cli import run_cli
from support.configs import tiny_config, write_config
from support.runs import only_run_dir
from support.tracking import (
    assert_final_metrics_logged,
    event_accumulator,
    wandb_history,
    wandb_records,
)

# The runs read back here are trained through the real CLI.
pytestmark = pytest.mark.slow


def jsonl_series(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for record in read_jsonl(run_dir / "metrics.jsonl"):
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                series.setdefault(key, []).append((record["step"], value))
    return series


def test_metrics_jsonl_holds_every_log_point(tiny_run_dir):
    results = read_results(tiny_run_dir)
    records = read_jsonl(tiny_run_dir / "metrics.jsonl")
    steps = [record["step"] for record in records]
    assert steps == sorted(steps)
    total = results["training"]["total_steps"]
    train_steps = [record["step"] for record in records if "train/loss" in record]
    assert [step for step in train_steps if step % 2] in ([], [total])  # log_steps: 2
    assert {step for step in range(2, total + 1, 2)} <= set(train_steps)
    last = records[-1]
    for key, value in results["test"].items():
        if isinstance(value, (int, float)):
            assert last[f"test/{key}"] == pytest.approx(value, rel=1e-9), key


def test_tensorboard_events_match_metrics_jsonl_and_results(tiny_run_dir):
    results = read_results(tiny_run_dir)
    accumulator = event_accumulator(tiny_run_dir / "logs")
    series = jsonl_series(tiny_run_dir)
    for tag in ("train/loss", "train/learning_rate", "train/grad_norm",
                "train/samples_per_second", "eval/loss", "eval/accuracy", "eval/f1_macro",
                "eval/f1_weighted", *(f"eval/f1_{label_slug(name)}"
                                      for name in results["data"]["label_names"])):
        assert tag in series and tag in accumulator.Tags()["scalars"], tag
    for tag, points in series.items():
        events = accumulator.Scalars(tag)
        assert [(event.step, event.value) for event in events] == [
            (step, pytest.approx(value, rel=1e-6)) for step, value in points], tag
    assert_final_metrics_logged(accumulator, results)


def test_tensorboard_has_images_curves_text_hparams_and_graph(tiny_run_dir):
    from tensorboard.plugins.hparams import api_pb2, metadata
    results = read_results(tiny_run_dir)
    accumulator = event_accumulator(tiny_run_dir / "logs")
    eval_steps = [step for step, _ in jsonl_series(tiny_run_dir)["eval/f1_macro"]]
    assert [image.step for image in accumulator.Images("eval/confusion_matrix")] == eval_steps
    assert len(accumulator.Images("test/confusion_matrix")) == 1
    assert {f"test/pr_curve/{label_slug(name)}" for name in results["data"]["label_names"]} <= \
        set(accumulator.PluginTagToContent("pr_curves"))
    text_tags = set(accumulator.PluginTagToContent("text"))
    assert {"config/text_summary", "eval/predictions/text_summary",
            "test/predictions/text_summary"} <= text_tags
    hparams = accumulator.PluginTagToContent("hparams")
    start = metadata.parse_session_start_info_plugin_data(
        hparams[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["experiment_name"].string_value == "tiny"
    assert start.hparams["model.hidden_size"].number_value == 32
    end = metadata.parse_session_end_info_plugin_data(hparams[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS
    assert len(accumulator.Graph().node) > 10


def test_test_predictions_csv_agrees_with_results(tiny_run_dir):
    results = read_results(tiny_run_dir)
    label_names = results["data"]["label_names"]
    with open(tiny_run_dir / "predictions" / "test_predictions.csv", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == results["data"]["splits"]["test"]["size"]
    probability_columns = [f"prob_{label_slug(name)}" for name in label_names]
    for column in ("text", "true_label", "predicted_label", "confidence", *probability_columns):
        assert column in rows[0], column
    probabilities = np.array([[float(row[column]) for column in probability_columns]
                              for row in rows])
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(len(rows)), abs=1e-4)
    assert [label_names[index] for index in probabilities.argmax(axis=1)] == \
        [row["predicted_label"] for row in rows]
    assert all(row["text"].strip() for row in rows)
    matrix = np.zeros((len(label_names), len(label_names)), dtype=int)
    for row in rows:
        matrix[label_names.index(row["true_label"]), label_names.index(row["predicted_label"])] += 1
    assert matrix.tolist() == results["test"]["confusion_matrix"]


def test_plots_decode_and_draw_the_results(tiny_run_dir):
    from PIL import Image
    results = read_results(tiny_run_dir)
    for name in ("learning_curves.png", "confusion_matrix.png", "per_class_metrics.png"):
        with Image.open(tiny_run_dir / "plots" / name) as image:
            image.load()
            assert 400 <= image.size[0] <= 3000 and 300 <= image.size[1] <= 2000, name
            assert len(set(image.convert("L").getdata())) > 20, name  # not a blank canvas
    with Image.open(tiny_run_dir / "plots" / "confusion_matrix.png") as image:
        assert json.loads(image.text["confusion_matrix"]) == results["test"]["confusion_matrix"]
        assert json.loads(image.text["label_names"]) == results["data"]["label_names"]


@pytest.fixture(scope="module")
def wandb_run_dir(tmp_path_factory):
    """A one-epoch tiny run with W&B on and no credentials, started from an empty folder."""
    import os
    workspace = tmp_path_factory.mktemp("wandb_run")
    saved = {name: os.environ.get(name) for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR",
                                                     "WANDB_DATA_DIR", "NETRC")}
    os.environ.update(WANDB_CACHE_DIR=str(workspace / "cache"),
                      WANDB_CONFIG_DIR=str(workspace / "config"),
                      WANDB_DATA_DIR=str(workspace / "data"), NETRC=str(workspace / "no-netrc"))
    try:
        config = tiny_config(
            experiment_name="tiny_wandb", training={"epochs": 1},
            data={"max_samples": 120},
            logging={"wandb": True, "tensorboard": True, "wandb_project": "bias-tests",
                     "wandb_run_name": "tiny-wandb-run", "wandb_log_model": True})
        config_path = write_config(workspace, config)
        completed = run_cli(str(config_path), "--output-dir", str(workspace / "runs"),
                            cwd=workspace, check=True)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return workspace, only_run_dir(workspace / "runs"), completed


def test_wandb_offline_cli_run_holds_the_metrics(wandb_run_dir):
    workspace, run_dir, completed = wandb_run_dir
    assert not (workspace / "wandb").exists()  # W&B files live in the run directory only
    folders = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 1
    assert f"wandb sync {folders[0]}" in completed.stdout + completed.stderr

    by_step: dict[int, dict] = {}
    for row in wandb_history(folders[0]):
        by_step.setdefault(row["_step"], {}).update(row)
    for key, points in jsonl_series(run_dir).items():
        for step, value in points:
            assert by_step[step][key] == pytest.approx(value, rel=1e-9), (step, key)
    final = max(by_step)
    assert by_step[final]["test/predictions/_type"] == "table-file"
    assert by_step[final]["test/per_class/nrows"] == 3

    records = list(wandb_records(folders[0]))
    run = next(record.run for record in records if record.WhichOneof("record_type") == "run")
    assert run.project == "bias-tests" and run.display_name == "tiny-wandb-run"
    assert list(run.tags) == ["test", "tiny"]
    artifacts = [record.artifact for record in records
                 if record.WhichOneof("record_type") == "artifact"
                 and record.artifact.type == "model"]
    assert artifacts and any(entry.path == "config.json" for entry in
                             artifacts[0].manifest.contents)

    summary: dict[str, object] = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.summary.update})
    results = read_results(run_dir)
    # The summary holds the best checkpoint's validation scores, as results.json does.
    assert summary["eval/f1_macro"] == pytest.approx(results["eval"]["f1_macro"], rel=1e-9)
    assert summary["test/f1_macro"] == pytest.approx(results["test"]["f1_macro"], rel=1e-9)
    assert summary["status"] == "completed"
    assert by_step[final]["plots/confusion_matrix/_type"] == "image-file"
    assert results["status"] == "completed"
    assert (run_dir / "logs").is_dir() and (run_dir / "plots" / "learning_curves.png").exists()
