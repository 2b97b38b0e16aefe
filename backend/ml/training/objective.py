"""What a kind of training hands the trainer: a model, its data and its loss.

Fine-tuning a classifier (:mod:`.classification`) and masked-language-model pre-training
(:mod:`backend.ml.pretraining.objective`) are each an :class:`Objective`; the trainer
(:mod:`.trainer`) owns everything they share: batching, accumulation, data parallelism, mixed
precision, the optimiser, evaluation points, checkpoints, signals and resume (torchtune's recipes
share ``train`` / ``save_checkpoint`` the same way, Lightning runs every ``LightningModule``
through one ``Trainer``).

>>> objective = ClassificationObjective(model, tokenizer, splits, config,
...                                     precision)  # doctest: +SKIP
>>> trainer = Trainer(objective, config, run_dir, trackers, world, precision)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from .distributed import World


class Evaluation(Protocol):
    """A validation score: ``metrics`` by name (``loss``, ``f1_macro`` ...), and the same as
    ``eval/...`` scalars for the trackers."""

    metrics: dict[str, Any]

    def prefixed_scalars(self) -> dict[str, float]: ...


class Objective(Protocol):
    """A model, its training data and its loss, and how a model of it is scored and saved."""

    model: torch.nn.Module
    """The model that is evaluated and saved (in checkpoints, as the best model)."""
    trained: torch.nn.Module
    """What the optimiser trains and the forward pass calls: ``model``, or ``model`` with an
    auxiliary head (saved in checkpoints through ``extra_state``)."""
    train_data: Any
    """Items by index (``__getitem__``, ``__len__``) and ``lengths``, tokens per item."""
    selection_metric: str
    """The ``metrics`` key that picks the best model and drives early stopping."""
    keeps_best_model: bool
    """Whether an improvement writes ``checkpoints/best`` (a pre-trained encoder is the last
    weights, not the best)."""
    auxiliary_name: str | None
    """The trackers' name of the auxiliary loss ``losses`` may return (its mean is logged)."""
    auxiliary_weight: float
    lr_scales: dict[int, float]
    """Learning-rate factor per parameter id (layer-wise decay); empty for one rate."""

    def collate(self, items: list) -> dict[str, torch.Tensor]:
        """Pad a list of ``train_data`` items into one batch of tensors."""

    def losses(self, forward_model: torch.nn.Module, batch: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(one loss per item of ``batch``, the auxiliary loss of the batch or None), with
        ``forward_model`` (``trained``, maybe compiled or DDP-wrapped) under the run's precision."""

    def evaluate(self, world: World) -> Evaluation:
        """``model`` on the validation data, the same on every process."""

    def save_model(self, directory: Path) -> None:
        """Write ``model`` (and its tokenizer) to ``directory``, replacing it whole."""

    def evaluate_saved(self, directory: Path, world: World) -> Evaluation:
        """A model saved by ``save_model`` on the validation data (a resumed run's best)."""

    def extra_state(self) -> dict:
        """What a checkpoint needs beyond ``model`` (an auxiliary head's weights)."""

    def load_extra_state(self, saved: dict) -> None: ...
