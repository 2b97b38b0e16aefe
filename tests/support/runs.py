"""Run directories: finding the one a CLI run made, and training a tiny one in-process."""

from __future__ import annotations

from pathlib import Path

from backend.ml.config import ExperimentConfig
from backend.ml.run import run_experiment

from .configs import tiny_config


def only_run_dir(runs_dir: Path) -> Path:
    """The single run directory under ``runs_dir``."""
    found = [path for path in Path(runs_dir).iterdir() if path.is_dir()]
    assert len(found) == 1, f"expected one run directory in {runs_dir}, found {found}"
    return found[0]


def train_tiny(runs_dir: Path, run_id: str, learning_rate: float) -> Path:
    """A tiny run; same data and seed as every other, so all share one test split."""
    config = ExperimentConfig.from_dict(tiny_config(
        training={"epochs": 1, "learning_rate": learning_rate},
        logging={"tensorboard": False, "log_steps": 5, "save_steps": 1000}))
    return run_experiment(config, runs_dir, run_id=run_id)
