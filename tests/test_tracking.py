"""Trackers, read back from what they wrote: TensorBoard events, W&B offline runs, PNGs.

A simulated run (synthetic evaluations, a tiny BERT for the graph) drives the real tracker set
the way the trainer does; every assertion reads an artifact back from disk.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import psutil
import pytest

from backend.ml.config import ExperimentConfig
from backend.ml.fileio import atomic_write_json, read_jsonl
from backend.ml.metrics import EvaluationResult, label_slug
from backend.ml.run_directory import SCHEMA_VERSION, write_results
from backend.ml.tracking import (
    TrackerSet,
    build_trackers,
    create_tracker,
    enabled_tracker_names,
    flatten_config,
    register_tracker,
    write_run_plots,
)
from backend.ml.tracking.wandb_tracker import WandbTracker, choose_mode, has_api_key
from support.tracking import (
    assert_final_metrics_logged,
    event_accumulator,
    wandb_history,
    wandb_records,
)

LABELS = ["Non-biased", "Biased", "No agreement"]
EVAL_STEPS = (4, 8)
LOG_STEPS = (2, 4, 6, 8)


def make_evaluation(split: str, seed: int, size: int = 30) -> EvaluationResult:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(LABELS), size=size)
    logits = rng.normal(size=(size, len(LABELS)))
    logits[np.arange(size), labels] += 1.5  # mostly right, some wrong
    texts = [f"{split} sentence {index} | with a pipe" for index in range(size)]
    return EvaluationResult(split, LABELS, labels, logits, texts, [{}] * size,
                            loss=0.9 - seed / 100, seconds=0.1)


def tiny_model():
    from transformers import BertConfig, BertForSequenceClassification
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=37, num_labels=len(LABELS))
    return BertForSequenceClassification(config)


def make_config(**logging_options) -> ExperimentConfig:
    config = ExperimentConfig(experiment_name="tracking_test", description="trackers read back",
                              tags=["test", "tracking"])
    config.logging.log_steps = 2
    config.logging.prediction_samples = 5
    for key, value in logging_options.items():
        setattr(config.logging, key, value)
    return config


def simulate_run(config: ExperimentConfig, run_dir: Path, model=None) -> dict:
    """Drive a tracker set as the trainer does, write results.json; returns the results."""
    import torch
    run_dir.mkdir(parents=True, exist_ok=True)
    trackers = build_trackers(config, run_dir)
    # torch.__version__ is a str subclass that yaml.safe_dump refuses: run_info carries one.
    trackers.log_config(config.to_dict(), {"command": "run_experiment.py test.yaml",
                                           "metadata": {"torch_version": torch.__version__}})
    if model is not None:
        trackers.log_model_graph(model, {"input_ids": torch.randint(0, 100, (2, 7)),
                                         "attention_mask": torch.ones(2, 7, dtype=torch.long),
                                         "labels": torch.tensor([0, 1])})
    evaluations = {}
    for step in LOG_STEPS:
        trackers.log_metrics({"epoch": step / 8, "train/loss": 1.0 / step,
                              "train/learning_rate": 1e-4 * (1 - step / 10),
                              "train/grad_norm": 2.0 + step, "train/samples_per_second": 50.0},
                             step)
        if step in EVAL_STEPS:
            evaluation = make_evaluation("eval", seed=step)
            evaluations[step] = evaluation
            trackers.log_metrics({**evaluation.prefixed_scalars(), "epoch": step / 8}, step)
            trackers.log_evaluation(evaluation, step)
    test = make_evaluation("test", seed=99, size=40)
    trackers.log_metrics({**test.prefixed_scalars(), "epoch": 1.0}, LOG_STEPS[-1])
    trackers.log_evaluation(test, LOG_STEPS[-1])
    best_step = max(evaluations, key=lambda step: evaluations[step].metrics["f1_macro"])
    results = {"schema_version": SCHEMA_VERSION, "experiment_id": run_dir.name,
               "status": "completed",
               "eval": evaluations[best_step].metrics, "test": test.metrics,
               "training": {"total_steps": 8, "best_step": best_step},
               "timing": {"total_seconds": 1.0}}
    write_results(run_dir, results)
    trackers.log_summary(results, run_dir)
    trackers.close("completed")
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tracking_test_abc123"
    results = simulate_run(make_config(tensorboard=True), run_dir, model=tiny_model())
    return run_dir, results


# -- TensorBoard ------------------------------------------------------------------------------

def test_tensorboard_scalars_match_metrics_jsonl(tensorboard_run):
    run_dir, _ = tensorboard_run
    accumulator = event_accumulator(run_dir / "logs")
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in read_jsonl(run_dir / "metrics.jsonl"):
        for key, value in record.items():
            if key != "step":
                expected.setdefault(key, []).append((record["step"], value))
    for tag in ("train/loss", "train/learning_rate", "train/grad_norm",
                "train/samples_per_second", "eval/loss", "eval/accuracy", "eval/f1_macro",
                "eval/f1_weighted", "eval/f1_biased", "eval/f1_non_biased",
                "eval/f1_no_agreement", "test/accuracy", "test/f1_macro"):
        assert tag in expected, tag
    scalar_tags = set(accumulator.Tags()["scalars"])
    assert set(expected) <= scalar_tags
    for tag, points in expected.items():
        events = accumulator.Scalars(tag)
        assert [event.step for event in events] == [step for step, _ in points], tag
        assert [event.value for event in events] == pytest.approx(
            [value for _, value in points], rel=1e-6), tag
    assert [event.step for event in accumulator.Scalars("eval/f1_macro")] == list(EVAL_STEPS)


def test_tensorboard_final_metrics_match_results(tensorboard_run):
    run_dir, results = tensorboard_run
    assert_final_metrics_logged(event_accumulator(run_dir / "logs"), results)


def test_tensorboard_images_pr_curves_and_text(tensorboard_run):
    import io

    from PIL import Image
    run_dir, _ = tensorboard_run
    accumulator = event_accumulator(run_dir / "logs")
    tags = accumulator.Tags()
    assert {"eval/confusion_matrix", "test/confusion_matrix"} <= set(tags["images"])
    images = accumulator.Images("eval/confusion_matrix")
    assert [image.step for image in images] == list(EVAL_STEPS)
    decoded = Image.open(io.BytesIO(images[-1].encoded_image_string))
    assert decoded.size[0] >= 400 and decoded.size[1] >= 200

    pr_tags = set(accumulator.PluginTagToContent("pr_curves"))
    assert pr_tags == {f"{split}/pr_curve/{label_slug(name)}"
                       for split in ("eval", "test") for name in LABELS}

    text_tags = set(accumulator.PluginTagToContent("text"))
    assert {"config/text_summary", "run_info/text_summary", "eval/predictions/text_summary",
            "test/predictions/text_summary"} <= text_tags
    config_text = accumulator.Tensors("config/text_summary")[0].tensor_proto.string_val[0]
    assert b"experiment_name: tracking_test" in config_text
    samples = accumulator.Tensors("test/predictions/text_summary")[0]
    table = samples.tensor_proto.string_val[0].decode()
    rows = [line for line in table.splitlines()[2:]]
    assert len(rows) == 5
    expected = make_evaluation("test", seed=99, size=40).samples(5)
    assert expected[0]["correct"] is False  # the synthetic data has mistakes to show first
    assert expected[0]["true_label"] in rows[0] and "**no**" in rows[0]
    assert "\\|" in rows[0]  # a '|' inside a sentence does not break the table


def test_tensorboard_hparams_and_graph(tensorboard_run):
    from tensorboard.plugins.hparams import api_pb2, metadata
    run_dir, _ = tensorboard_run
    accumulator = event_accumulator(run_dir / "logs")
    content = accumulator.PluginTagToContent("hparams")
    # Session start and end in the run's own logdir: no sub-run, no experiment tag.
    assert set(content) == {metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG}
    start = metadata.parse_session_start_info_plugin_data(
        content[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["experiment_name"].string_value == "tracking_test"
    assert start.hparams["training.learning_rate"].number_value == pytest.approx(2e-5)
    assert start.hparams["logging.tensorboard"].string_value == "true"
    assert start.hparams["tags"].string_value == "test,tracking"
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS
    assert [path.name for path in (run_dir / "logs").iterdir() if path.is_dir()] == []

    graph = accumulator.Graph()
    assert len(graph.node) > 10
    assert any("LogitsOnly" in node.name or "BertModel" in node.name for node in graph.node)


def test_untraceable_model_skips_the_graph_with_a_warning(tmp_path, caplog):
    import torch

    from backend.ml.tracking.tensorboard_tracker import TensorBoardTracker

    class NeedsLabels(torch.nn.Module):
        def forward(self, input_ids, attention_mask, labels):  # the wrapper cannot call this
            return input_ids

    tracker = TensorBoardTracker(tmp_path / "logs")
    model = NeedsLabels().train()
    with caplog.at_level(logging.WARNING):
        tracker.log_model_graph(model, {"input_ids": torch.zeros(1, 3, dtype=torch.long),
                                        "attention_mask": torch.ones(1, 3, dtype=torch.long)})
    tracker.log_metrics({"train/loss": 0.5}, 1)
    tracker.close("completed")
    assert "model graph skipped" in caplog.text
    assert model.training  # the mode the trainer left is restored
    assert event_accumulator(tmp_path / "logs").Scalars("train/loss")[0].value == 0.5


# -- plots --------------------------------------------------------------------------------------

def test_plots_exist_decode_and_show_the_results(tensorboard_run):
    from PIL import Image
    run_dir, results = tensorboard_run
    names = {"learning_curves.png", "confusion_matrix.png", "per_class_metrics.png"}
    assert {path.name for path in (run_dir / "plots").glob("*.png")} == names
    for name in names:
        with Image.open(run_dir / "plots" / name) as image:
            image.load()
            assert image.format == "PNG"
            assert 400 <= image.size[0] <= 3000 and 300 <= image.size[1] <= 2000, name
    with Image.open(run_dir / "plots" / "confusion_matrix.png") as image:
        drawn = {key: json.loads(value) for key, value in image.text.items()
                 if key in ("confusion_matrix", "split", "label_names")}
    assert drawn == {"confusion_matrix": results["test"]["confusion_matrix"], "split": "test",
                     "label_names": LABELS}
    assert sum(map(sum, drawn["confusion_matrix"])) == 40
    assert not list((run_dir / "plots").glob(".*"))  # no temporary files left behind


def test_plots_skip_what_has_no_data(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "train/loss": 0.7}\n')
    atomic_write_json(tmp_path / "results.json", {"status": "failed", "eval": None})
    assert [path.name for path in write_run_plots(tmp_path)] == ["learning_curves.png"]
    assert write_run_plots(tmp_path / "missing") == []


# -- the tracker set, the registry, helpers -----------------------------------------------------

class Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, method):
        return lambda *args: self.calls.append(method)


class Broken(Recorder):
    def log_metrics(self, metrics, step):
        raise RuntimeError("disk full")


def test_a_failing_tracker_warns_once_and_the_others_go_on(caplog):
    broken, healthy = Broken(), Recorder()
    trackers = TrackerSet([broken, healthy])
    with caplog.at_level(logging.WARNING):
        for step in range(3):
            trackers.log_metrics({"train/loss": 1.0}, step)
    trackers.close("completed")
    assert caplog.text.count("disk full") == 1
    assert healthy.calls == ["log_metrics"] * 3 + ["close"]
    assert broken.calls == ["close"]  # released once, when it was dropped


def test_registry_names_and_errors(tmp_path):
    config = make_config(tensorboard=False, wandb=True)
    assert enabled_tracker_names(config) == ["jsonl", "plots", "wandb"]
    with pytest.raises(ValueError, match="already registered"):
        register_tracker("jsonl")(lambda config, run_dir: None)
    with pytest.raises(ValueError, match="Unknown tracker 'mlflow'; registered: jsonl, plots, "
                                         "tensorboard, wandb"):
        create_tracker("mlflow", config, tmp_path)


def test_flatten_config_gives_scalars_only():
    flat = flatten_config(make_config().to_dict())
    assert flat["model.architecture"] == "bert"
    assert flat["data.path"] == "None"
    assert flat["cloud.zones"] == ""
    assert all(isinstance(value, (bool, int, float, str)) for value in flat.values())


def test_api_key_detection_without_reading_the_key(tmp_path):
    missing = str(tmp_path / "no-netrc")
    assert not has_api_key({"NETRC": missing})
    assert choose_mode({"NETRC": missing}) == "offline"
    assert choose_mode({"NETRC": missing, "WANDB_API_KEY": "x" * 40}) == "online"
    assert choose_mode({"NETRC": missing, "WANDB_MODE": "disabled"}) is None
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    netrc_file.chmod(0o600)
    assert has_api_key({"NETRC": str(netrc_file)})
    assert not has_api_key({"NETRC": str(netrc_file), "WANDB_BASE_URL": "https://wandb.example"})


# -- Weights & Biases, offline ------------------------------------------------------------------

@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    """No credentials, and wandb's own caches inside the test's directory."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR",
                 "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    return tmp_path


def _wandb_service_children() -> list[str]:
    """Command lines of this process's children that are W&B's service (``wandb-core``)."""
    children = []
    for child in psutil.Process().children():
        try:
            command = " ".join(child.cmdline())
        except psutil.Error:
            continue  # the process ended while we looked
        if "wandb-core" in command:
            children.append(command)
    return children


def test_wandb_offline_run_holds_the_logged_metrics(wandb_env, caplog, monkeypatch):
    run_dir = wandb_env / "runs" / "tracking_test_def456"
    process_modes = []
    wait_for_offline_file = WandbTracker._wait_for_offline_file

    def note_process_mode_then_wait():
        import wandb
        process_modes.append(wandb.setup().settings.mode)
        wait_for_offline_file()

    monkeypatch.setattr(WandbTracker, "_wait_for_offline_file",
                        staticmethod(note_process_mode_then_wait))
    with caplog.at_level(logging.INFO):
        results = simulate_run(make_config(tensorboard=False, wandb=True), run_dir)
    folders = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 1
    assert f"wandb sync {folders[0]}" in caplog.text
    assert not (Path.cwd() / "wandb").exists()

    history = wandb_history(folders[0])
    expected: dict[int, dict] = {}
    for record in read_jsonl(run_dir / "metrics.jsonl"):
        expected.setdefault(record["step"], {}).update(
            {key: value for key, value in record.items() if key != "step"})
    by_step = {row["_step"]: row for row in history}
    assert set(expected) <= set(by_step)
    for step, metrics in expected.items():
        for key, value in metrics.items():
            assert by_step[step][key] == pytest.approx(value, rel=1e-9), (step, key)
    assert by_step[8]["test/confusion_matrix_table/_type"] == "table-file"
    assert by_step[8]["test/predictions/nrows"] == 5

    run = next(record.run for record in wandb_records(folders[0])
               if record.WhichOneof("record_type") == "run")
    assert list(run.tags) == ["test", "tracking"]
    assert run.notes == "trackers read back"
    assert run.display_name == run_dir.name
    # The whole process was offline, not only the run: W&B's background usage analytics read
    # the process-wide settings and would otherwise keep reaching for its servers. Its service
    # is gone once the run is saved, having written the file the history above was read from.
    assert process_modes == ["offline"]
    assert _wandb_service_children() == []
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["training"]["learning_rate"] == pytest.approx(2e-5)
    assert config["run_info"]["command"] == "run_experiment.py test.yaml"

    tables = folders[0] / "files" / "media" / "table" / "test"
    matrix_file = next(tables.glob("confusion_matrix_table_*.table.json"))
    cells = json.loads(matrix_file.read_text())
    counts = {(row[0], row[1]): row[2] for row in cells["data"]}
    for true_id, row in enumerate(results["test"]["confusion_matrix"]):
        for predicted_id, count in enumerate(row):
            assert counts.get((LABELS[true_id], LABELS[predicted_id]), 0) == count


def test_a_broken_wandb_leaves_training_and_other_trackers_intact(wandb_env, monkeypatch,
                                                                   caplog):
    import wandb

    def refuse(*args, **kwargs):
        raise RuntimeError("wandb is broken")

    monkeypatch.setattr(wandb, "init", refuse)
    run_dir = wandb_env / "runs" / "broken_wandb_000001"
    with caplog.at_level(logging.WARNING):
        results = simulate_run(make_config(tensorboard=True, wandb=True), run_dir)
    assert caplog.text.count("wandb is broken") == 1
    assert results["status"] == "completed"
    steps = [record["step"] for record in read_jsonl(run_dir / "metrics.jsonl")]
    assert steps == [2, 4, 4, 6, 8, 8, 8]
    accumulator = event_accumulator(run_dir / "logs")
    assert [event.step for event in accumulator.Scalars("train/loss")] == list(LOG_STEPS)
    assert (run_dir / "plots" / "confusion_matrix.png").exists()


def test_wandb_failing_mid_run_is_dropped_after_one_warning(wandb_env, monkeypatch, caplog):
    from backend.ml.tracking.wandb_tracker import WandbTracker
    calls = {"count": 0}
    original = WandbTracker.log_metrics

    def flaky(self, metrics, step):
        calls["count"] += 1
        if calls["count"] == 2:
            raise ConnectionError("wandb lost its service")
        original(self, metrics, step)

    monkeypatch.setattr(WandbTracker, "log_metrics", flaky)
    run_dir = wandb_env / "runs" / "flaky_wandb_000002"
    with caplog.at_level(logging.WARNING):
        simulate_run(make_config(tensorboard=False, wandb=True), run_dir)
    assert caplog.text.count("wandb lost its service") == 1
    assert calls["count"] == 2  # never called again once dropped
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == 7
    folder = next((run_dir / "wandb").glob("offline-run-*"))
    exit_records = [record for record in wandb_records(folder)
                    if record.WhichOneof("record_type") == "exit"]
    assert exit_records and exit_records[0].exit.exit_code == 1  # finished, marked failed


def test_wandb_without_network_falls_back_offline_and_never_stores_the_key(wandb_env,
                                                                          monkeypatch, caplog):
    import wandb
    secret = "k" * 40
    monkeypatch.setenv("WANDB_API_KEY", secret)
    real_init = wandb.init
    modes = []

    def init_without_network(*args, **kwargs):
        modes.append(kwargs.get("mode"))
        if kwargs.get("mode") == "online":  # refused before any connection is attempted
            raise TimeoutError("api.wandb.ai unreachable")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init_without_network)
    run_dir = wandb_env / "runs" / "no_network_000003"
    with caplog.at_level(logging.INFO):
        simulate_run(make_config(tensorboard=True, wandb=True), run_dir)
    assert modes == ["online", "offline"]
    assert "logging offline instead" in caplog.text and "wandb sync" in caplog.text
    folder = next((run_dir / "wandb").glob("offline-run-*"))
    assert wandb_history(folder)  # the metrics went to the offline run
    leaked = [path for path in run_dir.rglob("*")
              if path.is_file() and secret.encode() in path.read_bytes()]
    assert leaked == []
    assert secret not in caplog.text
