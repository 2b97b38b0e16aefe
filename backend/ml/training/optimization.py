"""The optimiser and the learning-rate schedule (the step arithmetic is :mod:`.steps`')."""

from __future__ import annotations

import logging

import numpy as np
import torch
from transformers import get_scheduler

logger = logging.getLogger(__name__)

SCHEDULES = ("linear", "cosine", "constant")


def warmup_steps(training, total_steps: int) -> int:
    """``warmup_ratio`` of the run when set, else ``warmup_steps``; never beyond the run."""
    if training.warmup_ratio > 0:
        return min(round(training.warmup_ratio * total_steps), total_steps)
    return min(training.warmup_steps, total_steps)


def fused_adamw_supported(device: torch.device) -> bool:
    # torch has fused AdamW kernels for CUDA and CPU (since 2.4); elsewhere foreach is the fast one.
    return device.type in ("cuda", "cpu")


def build_optimizer(model: torch.nn.Module, training, device: torch.device,
                    lr_scales: dict[int, float] | None = None) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and normalisation weights; the fused kernel when
    ``training.fused_adamw`` is on and the device has one (same update, fewer kernel launches).

    ``lr_scales`` (parameter id -> factor, e.g. layer-wise decay) scales each parameter's rate.
    """
    lr_scales = lr_scales or {}
    grouped: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_norm_or_bias = parameter.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")
        key = (lr_scales.get(id(parameter), 1.0), not is_norm_or_bias)
        grouped.setdefault(key, []).append(parameter)
    groups = [{"params": parameters, "lr": training.learning_rate * scale,
               "weight_decay": training.weight_decay if decayed else 0.0}
              for (scale, decayed), parameters in sorted(grouped.items(), key=lambda item: (
                  -item[0][0], not item[0][1]))]
    if training.fused_adamw and fused_adamw_supported(device):
        return torch.optim.AdamW(groups, lr=training.learning_rate, fused=True)
    return torch.optim.AdamW(groups, lr=training.learning_rate, foreach=True)


def build_scheduler(optimizer: torch.optim.Optimizer, training, total_steps: int):
    """``training.lr_schedule`` (linear, cosine or constant) after linear warm-up.

    >>> scheduler = build_scheduler(optimizer, TrainingConfig(lr_schedule="cosine"),
    ...                             1000)  # doctest: +SKIP
    """
    name = {"constant": "constant_with_warmup"}.get(training.lr_schedule, training.lr_schedule)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps(training, total_steps),
                         num_training_steps=total_steps)


def class_weights(labels: list[int], num_labels: int) -> torch.Tensor:
    """Inverse-frequency weights (sklearn's 'balanced'), 1.0 for an absent class."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=num_labels).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_labels * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)
