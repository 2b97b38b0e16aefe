"""Fine-tuning a sentence classifier, as an :class:`~.objective.Objective` for the trainer.

The loss per sentence is the (class-weighted, label-smoothed) cross-entropy, mixed with a
teacher's soft targets when the run is distilled; with ``training.biased_words_loss_weight`` the
classifier trains inside :class:`~.recipes.SentenceAndTokenModel`, whose tagging head's loss is
the auxiliary loss. The validation split is tokenised once, here.

>>> objective = ClassificationObjective(model, tokenizer, splits, config,
...                                     precision)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import ExperimentConfig
from ..data import DataSplits, TokenizedDataset, make_collator
from ..metrics import EvaluationResult
from ..models import load_saved_model, save_model
from .distributed import World
from .evaluation import evaluate, forward_logits
from .optimization import class_weights
from .precision import Precision
from .recipes import SentenceAndTokenModel, distillation_losses, layerwise_lr_scales


class ClassificationObjective:
    """A classifier, the training split (and a teacher's probabilities), the sentence loss."""

    auxiliary_name: str | None = "train/biased_words_loss"
    keeps_best_model = True

    def __init__(self, model: torch.nn.Module, tokenizer, splits: DataSplits,
                 config: ExperimentConfig, precision: Precision,
                 soft_targets: list[list[float]] | None = None):
        training = config.training
        self.model, self.tokenizer, self.splits = model, tokenizer, splits
        self.config, self.precision = config, precision
        self.selection_metric = training.early_stopping_metric
        self.auxiliary_weight = training.biased_words_loss_weight
        tags_biased_words = self.auxiliary_weight > 0
        self.trained: torch.nn.Module = (SentenceAndTokenModel(model) if tags_biased_words
                                         else model)
        self.train_data = TokenizedDataset(splits.train, tokenizer, config.data.max_length,
                                           tag_biased_words=tags_biased_words,
                                           soft_targets=soft_targets)
        self.validation_data = TokenizedDataset(splits.validation, tokenizer,
                                                config.data.max_length)
        self.collate = make_collator(tokenizer)
        self.lr_scales = layerwise_lr_scales(model, training.layerwise_lr_decay)
        weights = (class_weights(splits.train.labels, len(splits.label_names))
                   if training.class_weighting == "balanced" else None)
        self.loss_function = torch.nn.CrossEntropyLoss(
            weight=weights, reduction="none", label_smoothing=training.label_smoothing)

    def losses(self, forward_model: torch.nn.Module, batch: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        tagging_loss = None
        with self.precision.autocast():
            if isinstance(self.trained, SentenceAndTokenModel):
                logits, tagging_loss = forward_model(batch["input_ids"], batch["attention_mask"],
                                                     batch["token_labels"])
            else:
                logits = forward_logits(forward_model, batch)
        self.loss_function.to(logits.device)
        losses = self.loss_function(logits.float(), batch["labels"])
        if "soft_targets" in batch:
            distillation = self.config.training.distillation
            losses = distillation_losses(losses, logits.float(), batch["soft_targets"],
                                         distillation.temperature, distillation.soft_weight)
        return losses, tagging_loss

    def evaluate(self, world: World) -> EvaluationResult:
        return self._evaluate(self.model, world)

    def evaluate_saved(self, directory: Path, world: World) -> EvaluationResult:
        saved, _ = load_saved_model(directory)
        return self._evaluate(saved.to(world.device), world)

    def _evaluate(self, model: torch.nn.Module, world: World) -> EvaluationResult:
        return evaluate(model, self.tokenizer, self.splits.validation, "eval",
                        self.splits.label_names, self.config.data.max_length,
                        self.config.training.eval_batch_size, world.device,
                        precision=self.precision, world=world, dataset=self.validation_data)

    def save_model(self, directory: Path) -> None:
        save_model(self.model, self.tokenizer, directory, self.splits.label_names)

    def extra_state(self) -> dict:
        if isinstance(self.trained, SentenceAndTokenModel):
            return {"token_head": self.trained.token_head.state_dict()}
        return {}

    def load_extra_state(self, saved: dict) -> None:
        if isinstance(self.trained, SentenceAndTokenModel):
            self.trained.token_head.load_state_dict(saved["token_head"])
