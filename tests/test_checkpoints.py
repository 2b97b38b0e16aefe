"""Step checkpoints are whole or ignored: real files truncated, bit-flipped, half-written."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from backend.ml.checkpoint_files import MANIFEST_FILE, checkpoint_problem, latest_valid_checkpoint
from backend.ml.config.schema import ModelConfig
from backend.ml.errors import UserError
from backend.ml.experiments import ExperimentManager
from backend.ml.model_factory import ModelFactory
from backend.ml.models import save_model
from backend.ml.run_directory import read_results
from backend.ml.training.checkpoints import load_checkpoint, save_checkpoint, step_checkpoints
from support.cli import run_cli

LABELS = ["Non-biased", "Biased", "No agreement"]
TEXTS = ["The senator's reckless scheme will ruin us.",
         "The council approved the budget on Tuesday.",
         "Activists staged an outrageous stunt."] * 4


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    config = ModelConfig(architecture="bert", pretrained=False, hidden_size=32,
                         num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         vocab_size=120)
    built = ModelFactory.create(config, LABELS, TEXTS)
    return built.model, built.tokenizer


def save(checkpoints_dir, tiny_model, step, keep=10):
    model, tokenizer = tiny_model
    state = {"global_step": step, "epoch": 0, "optimizer": {"lr": 0.1 * step}}
    return save_checkpoint(checkpoints_dir, model, tokenizer, LABELS, state, keep)


def weights_file(checkpoint):
    return checkpoint / "model" / "model.safetensors"


def test_a_checkpoint_carries_a_manifest_and_loads_back(tmp_path, tiny_model):
    checkpoint = save(tmp_path, tiny_model, 7)
    assert checkpoint.name == "step-000007"
    manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())
    files = manifest["files"]
    assert files["model/model.safetensors"]["size"] == weights_file(checkpoint).stat().st_size
    assert {"training_state.pt", "model/config.json", "model/label_names.json"} <= set(files)
    assert step_checkpoints(tmp_path) == [checkpoint]
    model, _, state = load_checkpoint(checkpoint)
    assert state["global_step"] == 7 and state["optimizer"] == {"lr": pytest.approx(0.7)}
    original = dict(tiny_model[0].named_parameters())
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, original[name])
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".")]


@pytest.mark.parametrize("damage,expected", [
    ("truncate", "has 100 bytes"),
    ("flip", "does not match its SHA-256"),
    ("delete_manifest", "no manifest.json"),
    ("delete_state", "training_state.pt is missing"),
    ("garble_manifest", "manifest.json cannot be read"),
])
def test_a_damaged_checkpoint_is_skipped_with_a_warning_naming_it(tmp_path, tiny_model, caplog,
                                                                  damage, expected):
    previous = save(tmp_path, tiny_model, 2)
    newest = save(tmp_path, tiny_model, 4)
    if damage == "truncate":
        with open(weights_file(newest), "r+b") as stream:
            stream.truncate(100)
    elif damage == "flip":
        data = bytearray(weights_file(newest).read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights_file(newest).write_bytes(bytes(data))
    elif damage == "delete_manifest":
        (newest / MANIFEST_FILE).unlink()
    elif damage == "delete_state":
        (newest / "training_state.pt").unlink()
    else:
        (newest / MANIFEST_FILE).write_text('{"files": {"model/')
    with caplog.at_level(logging.WARNING):
        assert latest_valid_checkpoint(tmp_path) == previous
    assert f"skipping checkpoint {newest}" in caplog.text and expected in caplog.text
    assert step_checkpoints(tmp_path) == [previous]
    assert expected in checkpoint_problem(newest)


def test_an_unfinished_write_is_ignored_then_cleaned_up(tmp_path, tiny_model, caplog):
    previous = save(tmp_path, tiny_model, 2)
    # What a process killed during a checkpoint write leaves: the staged copy, no rename.
    half_written = tmp_path / ".step-000004.partial"
    shutil.copytree(previous, half_written)
    (half_written / MANIFEST_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        assert latest_valid_checkpoint(tmp_path) == previous
    assert f"ignoring {half_written}" in caplog.text
    save(tmp_path, tiny_model, 3)
    assert not half_written.exists()


def test_save_total_limit_keeps_the_newest_valid_and_never_the_best(tmp_path, tiny_model):
    model, tokenizer = tiny_model
    save_model(model, tokenizer, tmp_path / "best", LABELS)
    for step in (1, 2, 3):
        save(tmp_path, tiny_model, step, keep=2)
    with open(weights_file(tmp_path / "step-000003"), "r+b") as stream:
        stream.truncate(10)  # the newest is damaged: step 2 is now the newest valid one
    save(tmp_path, tiny_model, 4, keep=2)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best", "step-000002",
                                                                  "step-000004"]
    save(tmp_path, tiny_model, 5, keep=1)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best", "step-000005"]
    assert (tmp_path / "best" / "config.json").is_file()


def test_saving_the_same_step_again_replaces_it_whole(tmp_path, tiny_model):
    first = save(tmp_path, tiny_model, 6)
    (first / "stray.txt").write_text("from an older attempt")
    again = save(tmp_path, tiny_model, 6)
    assert again == first and not (again / "stray.txt").exists()
    assert checkpoint_problem(again) is None


def test_loading_a_damaged_checkpoint_says_which_one(tmp_path, tiny_model):
    checkpoint = save(tmp_path, tiny_model, 2)
    (checkpoint / "training_state.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match=r"checkpoint .*step-000002 cannot be loaded"):
        load_checkpoint(checkpoint)


@pytest.mark.slow
def test_resume_passes_over_a_truncated_newest_checkpoint_to_the_same_result(tmp_path,
                                                                             tiny_run_dir):
    run_dir = tmp_path / tiny_run_dir.name
    shutil.copytree(tiny_run_dir, run_dir)
    older, newest = step_checkpoints(run_dir / "checkpoints")[-2:]
    with open(weights_file(newest), "r+b") as stream:  # killed while the disk was writing it
        stream.truncate(weights_file(newest).stat().st_size // 2)
    shutil.rmtree(run_dir / "final_model")
    crashed = read_results(run_dir)
    crashed["status"] = "running"
    (run_dir / "results.json").write_text(json.dumps(crashed))
    listed = ExperimentManager(tmp_path).load_run(run_dir.name)
    assert (listed.status, listed.resumable) == ("crashed", True) and older.name in listed.reason

    resumed = run_cli("resume", str(run_dir), check=True)
    assert f"skipping checkpoint {newest}: model/model.safetensors has" in resumed.stderr
    assert f"Resuming {run_dir.name} from {older.name}" in resumed.stdout
    after, original = read_results(run_dir), read_results(tiny_run_dir)
    assert after["status"] == "completed"
    assert after["test"] == original["test"] and after["eval"] == original["eval"]
    assert checkpoint_problem(run_dir / "checkpoints" / newest.name) is None  # rewritten whole
