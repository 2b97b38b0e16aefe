"""The step arithmetic of a run, computed in one place: the global batch, optimiser steps per
epoch and over the run. The trainer, the run plan, results.json, pre-training and the cloud cost
estimate all ask here; it needs no torch, so a dry run stays quick.
"""

from __future__ import annotations


def global_batch_size(training, world_size: int = 1) -> int:
    """Sentences per optimiser step: per-process batch x processes x accumulated batches.

    >>> from backend.ml.config import TrainingConfig
    >>> global_batch_size(TrainingConfig(batch_size=16, gradient_accumulation_steps=2), 4)
    128
    """
    return training.batch_size * world_size * training.gradient_accumulation_steps


def optimizer_steps_per_epoch(train_size: int, batch_size: int, world_size: int,
                              gradient_accumulation_steps: int) -> int:
    """Optimiser steps in one pass over ``train_size`` sentences; a last short batch and a last
    short accumulation window each still make a step.

    >>> optimizer_steps_per_epoch(100, batch_size=16, world_size=1, gradient_accumulation_steps=2)
    4
    """
    batches = -(-train_size // (batch_size * world_size))
    return -(-batches // gradient_accumulation_steps)


def planned_steps(train_size: int, training, world_size: int = 1) -> int:
    """Optimiser steps a run of ``training`` (the TrainingConfig) will take."""
    total = training.epochs * optimizer_steps_per_epoch(
        train_size, training.batch_size, world_size, training.gradient_accumulation_steps)
    return min(total, training.max_steps) if training.max_steps else total
