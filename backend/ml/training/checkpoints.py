"""Resumable checkpoints: model weights plus optimiser, scheduler and RNG state."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from ..models import load_saved_model, save_model

_STEP_DIRECTORY = re.compile(r"^step-(\d+)$")
STATE_FILE = "training_state.pt"


def rng_state() -> dict:
    """Every random generator's state, so a resumed run continues the same random stream."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(checkpoints_dir: Path, model, tokenizer, label_names: list[str],
                    training_state: dict, keep: int) -> Path:
    """Write ``checkpoints/step-NNNNNN/`` (model + training state) and drop the oldest beyond ``keep``."""
    step = training_state["global_step"]
    final = Path(checkpoints_dir) / f"step-{step:06d}"
    staging = final.with_name(f".{final.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    save_model(model, tokenizer, staging / "model", label_names)
    torch.save({**training_state, "rng": rng_state()}, staging / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)  # a checkpoint directory is complete or absent, never half-written
    for old in step_checkpoints(checkpoints_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def step_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete step checkpoints, oldest first."""
    directory = Path(checkpoints_dir)
    if not directory.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in directory.iterdir()
             if (match := _STEP_DIRECTORY.match(path.name)) and (path / STATE_FILE).is_file()]
    return [path for _, path in sorted(found)]


def load_checkpoint(checkpoint_dir: Path):
    """(model, tokenizer, training_state) of a step checkpoint."""
    model, tokenizer = load_saved_model(Path(checkpoint_dir) / "model")
    state = torch.load(Path(checkpoint_dir) / STATE_FILE, map_location="cpu", weights_only=False)
    return model, tokenizer, state
