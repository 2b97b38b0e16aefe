"""Runs killed by real signals: SIGTERM stops cleanly, SIGKILL at any point loses nothing.

One chain of real processes over one run directory: SIGTERM mid-training, SIGKILL during a
checkpoint write, SIGKILL as an epoch's evaluation starts, then a resume to the end. The result
must equal an uninterrupted run of the same config, metric for metric and weight for weight.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from backend.ml.run_directory import read_results, read_results_or_empty
from support.cli import REPO_ROOT, cli_environment, run_cli, run_main
from support.configs import tiny_config, write_config
from support.runs import only_run_dir

# All 400 demo sentences, 200 for training: 13 steps an epoch, 52 in all, with a checkpoint
# every step.
CHAIN_CONFIG = tiny_config(
    training={"epochs": 4, "mixed_precision": "no"},
    data={"max_samples": 0, "train_split": 0.5, "validation_split": 0.3},
    logging={"tensorboard": False, "log_steps": 1, "save_steps": 1, "save_minutes": 0})
STEPS_PER_EPOCH = 13
# Three folds of one epoch, a checkpoint every step: fold 1 trains 4 steps (53 sentences,
# batch 16).
CV_CONFIG = tiny_config(
    training={"epochs": 1},
    data={"cv_folds": 3, "max_samples": 90},
    logging={"tensorboard": False, "save_steps": 1, "save_minutes": 0})


def start(*args: str, kill_at: str | None = None) -> subprocess.Popen:
    """The CLI in a new process; with ``kill_at``, SIGKILLed at that point (support.kill_at)."""
    launcher = [str(REPO_ROOT / "tests" / "support" / "kill_at.py"), kill_at] if kill_at else []
    return subprocess.Popen([sys.executable, *launcher, str(REPO_ROOT / "run_experiment.py"),
                             *args], cwd=REPO_ROOT, env=cli_environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def logged_steps(run_dir: Path) -> list[dict]:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return []
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.endswith("}")]


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before {what}:\n"
                                 f"{process.communicate()[1][-2000:]}")
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"timed out waiting for {what}")


def last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    newest = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    return load_file(newest / "model" / "model.safetensors")


@pytest.mark.slow
def test_sigterm_then_sigkills_then_resume_equal_the_uninterrupted_run(tmp_path):
    config_path = write_config(tmp_path, CHAIN_CONFIG)
    # Every run of the chain, the reference too, in a process of its own: results must match
    # to the last bit, and a process's thread count changes the order of float sums.
    run_cli(str(config_path), "--output-dir", str(tmp_path / "reference"), check=True)
    reference_dir = only_run_dir(tmp_path / "reference")
    reference = read_results(reference_dir)

    # SIGTERM mid-training: the step finishes, a checkpoint is written, exit 128 + 15.
    process = start(str(config_path), "--output-dir", str(tmp_path / "runs"))
    wait_for(lambda: any((tmp_path / "runs").glob("*/metrics.jsonl"))
             and len(logged_steps(only_run_dir(tmp_path / "runs"))) >= 5, process,
             "five logged steps")
    run_dir = only_run_dir(tmp_path / "runs")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert f"run_experiment.py resume {run_dir}\n" in stderr and "Traceback" not in stderr
    stopped = read_results(run_dir)
    assert stopped["status"] == "interrupted" and "SIGTERM" in stopped["error"]
    step = stopped["interrupted_at_step"]
    assert (run_dir / "checkpoints" / f"step-{step:06d}" / "training_state.pt").is_file()

    # SIGKILL while a checkpoint is being written: the partial one is ignored on resume.
    process = start("resume", str(run_dir), kill_at="checkpoint-manifest")
    process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL
    assert [path.name for path in (run_dir / "checkpoints").iterdir()
            if path.name.endswith(".partial")] == [f".step-{step + 1:06d}.partial"]
    assert read_results(run_dir)["status"] == "running"  # what a crash leaves behind

    # SIGKILL as the resumed run's first evaluation (its epoch's end) starts.
    process = start("resume", str(run_dir), kill_at="evaluation")
    process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL
    assert any(record["step"] % STEPS_PER_EPOCH == 0 for record in logged_steps(run_dir)
               if record["step"] > step)

    run_cli("resume", str(run_dir), check=True)
    final = read_results(run_dir)
    assert final["status"] == "completed"
    assert final["eval"] == reference["eval"] and final["test"] == reference["test"]
    assert final["training"]["total_steps"] == reference["training"]["total_steps"] == 52
    reference_weights, final_weights = last_weights(reference_dir), last_weights(run_dir)
    assert all(torch.equal(reference_weights[name], final_weights[name])
               for name in reference_weights)
    assert not list(run_dir.rglob("*.partial"))  # the killed write was redone and replaced


@pytest.mark.slow
def test_a_killed_cross_validation_run_resumes_keeping_its_finished_folds(tmp_path, capsys):
    config_path = write_config(tmp_path, CV_CONFIG)
    # Each fold evaluates once (its epoch's end): the second evaluation is fold 2's.
    process = start(str(config_path), "--output-dir", str(tmp_path / "runs"),
                    kill_at="evaluation@2")
    process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL
    parent = only_run_dir(tmp_path / "runs")
    first_fold = parent / "folds" / "fold-1" / "results.json"
    finished_fold = first_fold.read_bytes()
    assert read_results(parent / "folds" / "fold-2")["status"] == "running"
    assert not (parent / "folds" / "fold-3").exists()

    refused = run_main(capsys, "resume", str(parent / "folds" / "fold-2"))
    assert refused.returncode != 0 and f"resume {parent}" in refused.stderr
    assert "Traceback" not in refused.stderr

    resumed = run_main(capsys, "resume", str(parent), check=True)
    assert "fold 1/3 completed earlier, kept" in resumed.stdout
    assert first_fold.read_bytes() == finished_fold  # not trained again
    second = read_results(parent / "folds" / "fold-2")
    assert second["status"] == "completed" and second["metadata"]["resumed_from_step"] > 0
    assert read_results(parent / "folds" / "fold-3")["status"] == "completed"
    summary = read_results(parent)
    assert summary["status"] == "completed"
    assert summary["cross_validation"]["num_folds"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("kill_at, exit_code, why, fold_2", [
    # The sixth optimiser step is fold 2's second: it finishes with a checkpoint.
    ("optimizer-step@6:TERM", 143, "SIGTERM", "interrupted"),
    # Fold 2's model is the second one built: no training step runs to finish first.
    ("model-creation@2:INT", 130, "Ctrl-C", None),
], ids=["sigterm-in-a-fold", "ctrl-c-between-folds"])
def test_a_stopped_cross_validation_run_says_to_resume_the_whole_run(tmp_path, kill_at,
                                                                    exit_code, why, fold_2):
    config_path = write_config(tmp_path, CV_CONFIG)
    process = start(str(config_path), "--output-dir", str(tmp_path / "runs"), kill_at=kill_at)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == exit_code, stderr[-2000:]
    parent = only_run_dir(tmp_path / "runs")
    assert f"Continue it with: python run_experiment.py resume {parent}\n" in stderr
    assert "RUN_DIR" not in stderr and "Traceback" not in stderr
    stopped = read_results(parent)
    assert stopped["status"] == "interrupted" and why in stopped["error"]
    assert read_results(parent / "folds" / "fold-1")["status"] == "completed"
    assert read_results_or_empty(parent / "folds" / "fold-2").get("status") == fold_2


def test_ctrl_c_before_a_run_directory_exists_leaves_nothing_to_resume(tmp_path):
    config_path = write_config(tmp_path, tiny_config())
    process = start(str(config_path), "--output-dir", str(tmp_path / "runs"),
                    kill_at="model-creation:INT")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert stderr.endswith("\nInterrupted.\n") and "Traceback" not in stderr
    assert not (tmp_path / "runs").exists()

