"""Resumable checkpoints: model weights plus optimiser, scheduler and RNG state.

Each ``checkpoints/step-NNNNNN/`` is assembled in a hidden ``.step-NNNNNN.partial/``, given a
manifest of sizes and checksums, fsync'd and renamed into place: it is whole or absent, and a
damaged one is recognised (see :mod:`backend.ml.checkpoint_files`).
"""

from __future__ import annotations

import pickle
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..checkpoint_files import (
    MODEL_DIRECTORY,
    STATE_FILE,
    latest_valid_checkpoint,
    remove_old_checkpoints,
    replace_directory,
    staging_directory,
    step_checkpoints,
    step_directory_name,
    write_manifest,
)
from ..errors import ResumableError, UserError
from ..fileio import StorageError, fsync_directory, fsync_tree, write_failure
from ..models import load_saved_model, save_model

__all__ = ["MODEL_DIRECTORY", "STATE_FILE", "CheckpointWriteError", "latest_valid_checkpoint",
           "load_checkpoint", "load_training_state", "restore_rng_state", "rng_state",
           "save_checkpoint", "step_checkpoints", "write_checkpoint"]


class CheckpointWriteError(StorageError, ResumableError):
    """A checkpoint could not be written (a full disk, say): the run goes on from its last
    complete checkpoint once the disk is fixed, and the message ends with the command."""


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
    """Write ``checkpoints/step-NNNNNN/`` of a classifier atomically and keep the newest ``keep``.

    A full disk raises StorageError and leaves the previous checkpoints as they were.

    >>> save_checkpoint(run_dir / "checkpoints", model, tokenizer, labels, state,
    ...                 keep=2)  # doctest: +SKIP
    PosixPath('.../checkpoints/step-000200')
    """
    return write_checkpoint(checkpoints_dir,
                            lambda directory: save_model(model, tokenizer, directory, label_names),
                            training_state, keep)


def write_checkpoint(checkpoints_dir: Path, write_model: Callable[[Path], None],
                     training_state: dict, keep: int) -> Path:
    """``save_checkpoint`` for any model: ``write_model(directory)`` writes its ``model/``.

    >>> write_checkpoint(run_dir / "checkpoints", objective.save_model, state,
    ...                  keep=2)  # doctest: +SKIP
    """
    checkpoints_dir = Path(checkpoints_dir)
    final = checkpoints_dir / step_directory_name(training_state["global_step"])
    staging = staging_directory(final)
    try:
        shutil.rmtree(staging, ignore_errors=True)
        write_model(staging / MODEL_DIRECTORY)
        with open(staging / STATE_FILE, "wb") as stream:
            torch.save({**training_state, "rng": rng_state()}, stream)
        write_manifest(staging)  # last: its presence vouches for every file above
        fsync_tree(staging)
        replace_directory(staging, final)
        fsync_directory(checkpoints_dir)
    except BaseException as error:
        explained = write_failure(final, error)  # before the cleanup frees space again
        shutil.rmtree(staging, ignore_errors=True)
        if explained is None:
            raise
        raise CheckpointWriteError(final, explained.cause,
                                   f"{explained.advice} To go on from the last complete "
                                   f"checkpoint instead of the start:") from error
    remove_old_checkpoints(checkpoints_dir, keep)
    return final


def load_training_state(checkpoint_dir: Path) -> dict:
    """The training state of a step checkpoint (any model)."""
    try:
        return torch.load(Path(checkpoint_dir) / STATE_FILE, map_location="cpu",
                          weights_only=False)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as error:
        raise UserError(f"checkpoint {checkpoint_dir} cannot be loaded ({error}); remove it to "
                        f"resume from an earlier one") from error


def load_checkpoint(checkpoint_dir: Path):
    """(model, tokenizer, training_state) of a step checkpoint.

    >>> latest = latest_valid_checkpoint(run_dir / "checkpoints")  # doctest: +SKIP
    >>> model, tokenizer, state = load_checkpoint(latest)  # doctest: +SKIP
    """
    checkpoint_dir = Path(checkpoint_dir)
    try:
        model, tokenizer = load_saved_model(checkpoint_dir / MODEL_DIRECTORY)
        state = torch.load(checkpoint_dir / STATE_FILE, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as error:
        raise UserError(f"checkpoint {checkpoint_dir} cannot be loaded ({error}); remove it to "
                        f"resume from an earlier one") from error
    return model, tokenizer, state
