"""Shared fixtures: tiny offline configs, the CLI as a subprocess, one tiny trained run."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent
BABE_DIR = Path(os.environ.get("BABE_DATA_DIR", REPO_ROOT.parent / "shared" / "data" / "babe"))

# A randomly initialised two-layer BERT on the shipped demo data: trains in seconds on a CPU.
TINY_CONFIG = {
    "experiment_name": "tiny",
    "description": "tiny offline test run",
    "tags": ["test", "tiny"],
    "seed": 7,
    "model": {"architecture": "bert", "model_name": "tiny-bert", "pretrained": False,
              "num_labels": 3, "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 500,
              "dropout": 0.1},
    "training": {"batch_size": 16, "eval_batch_size": 32, "learning_rate": 1.0e-3, "epochs": 2,
                 "warmup_steps": 2, "device": "cpu"},
    "data": {"dataset": "demo", "max_samples": 150, "max_length": 64, "train_split": 0.6,
             "validation_split": 0.2},
    "logging": {"tensorboard": True, "wandb": False, "log_steps": 2, "save_steps": 4},
}


def tiny_config(**sections) -> dict:
    """TINY_CONFIG with sections updated, e.g. ``tiny_config(training={"epochs": 1})``."""
    config = copy.deepcopy(TINY_CONFIG)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


def write_config(directory: Path, config: dict, name: str = "config.yaml") -> Path:
    path = Path(directory) / name
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def cli_environment() -> dict:
    """The environment a user without a network has: no hub, no W&B server."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO_ROOT))
    env.pop("WANDB_API_KEY", None)
    return env


def run_cli(*args: str, cwd: Path = REPO_ROOT, check: bool = False,
            timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python run_experiment.py ARGS`` as a user would; output is captured."""
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "run_experiment.py"), *args],
                               cwd=cwd, env=cli_environment(), capture_output=True, text=True,
                               timeout=timeout)
    if check and completed.returncode != 0:
        raise AssertionError(f"run_experiment.py {' '.join(args)} exited "
                             f"{completed.returncode}:\n{completed.stdout}\n{completed.stderr}")
    return completed


def only_run_dir(runs_dir: Path) -> Path:
    """The single run directory under ``runs_dir``."""
    found = [path for path in Path(runs_dir).iterdir() if path.is_dir()]
    assert len(found) == 1, f"expected one run directory in {runs_dir}, found {found}"
    return found[0]


def read_results(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.fixture
def babe_dir() -> Path:
    if not (BABE_DIR / "final_labels_SG1.csv").is_file():
        pytest.skip(f"BABE files not found in {BABE_DIR} (set BABE_DATA_DIR or place them in "
                    f"../shared/data/babe)")
    return BABE_DIR


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory) -> Path:
    """One complete tiny training through the real CLI, shared by every test that reads a run."""
    workspace = tmp_path_factory.mktemp("tiny_run")
    config_path = write_config(workspace, tiny_config())
    run_cli(str(config_path), "--output-dir", str(workspace / "runs"), check=True)
    return only_run_dir(workspace / "runs")
