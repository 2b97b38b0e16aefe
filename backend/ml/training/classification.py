"""Fine-tuning a sentence classifier, as an :class:`~.objective.Objective` for the trainer.

The loss per sentence is the (class-weighted, label-smoothed) cross-entropy, mixed with a
teacher's soft targets when the run is distilled, plus the distance to the teacher's sentence
embedding with ``training.distillation.embedding_weight``. With that or with
``training.biased_words_loss_weight`` the classifier trains inside
:class:`~.recipes.ClassifierWithTrainingHeads`; its tagging head's loss is the auxiliary loss.
The validation split is tokenised once, here.

>>> objective = ClassificationObjective(model, tokenizer, splits, config,
...                                     precision)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import ExperimentConfig
from ..data import DataSplits, TokenizedDataset, make_collator
from ..errors import UserError
from ..metrics import EvaluationResult
from ..models import BaseBiasClassifier, load_saved_model, save_model
from .distributed import World
from .evaluation import evaluate, forward_logits
from .optimization import class_weights
from .precision import Precision
from .recipes import (
                      ClassifierWithTrainingHeads,
                      HeadOutputs,
                      distillation_losses,
                      embedding_distances,
                      layerwise_lr_scales,
)


def check_hidden_state_options(config: ExperimentConfig, registered_class: bool) -> None:
    """Refuse the training heads that read the student's hidden states (the biased-word tagger,
    the embedding match) when it is a ``registered_class``, which gives only logits."""
    if not registered_class:
        return
    training = config.training
    for option, weight in (("training.biased_words_loss_weight",
                            training.biased_words_loss_weight),
                           ("training.distillation.embedding_weight",
                            training.distillation.embedding_weight)):
        if weight > 0:
            raise UserError(f"{option}: the model {config.model.architecture} is a registered "
                            f"model class, which gives no hidden states for it; use a "
                            f"transformers architecture or set {option} to 0")


class ClassificationObjective:
    """A classifier, the training split (and what a teacher says of it), the sentence loss.

    ``teacher_targets`` holds per training sentence the teacher's ``soft_targets`` (its tempered
    probabilities) and, for embedding distillation, its ``teacher_embeddings``.
    """

    auxiliary_name: str | None = "train/biased_words_loss"
    keeps_best_model = True

    def __init__(self, model: torch.nn.Module, tokenizer, splits: DataSplits,
                 config: ExperimentConfig, precision: Precision,
                 teacher_targets: dict[str, np.ndarray] | None = None):
        training = config.training
        self.model, self.tokenizer, self.splits = model, tokenizer, splits
        self.config, self.precision = config, precision
        self.selection_metric = training.early_stopping_metric
        self.auxiliary_weight = training.biased_words_loss_weight
        tags_biased_words = self.auxiliary_weight > 0
        teacher_embeddings = (teacher_targets or {}).get("teacher_embeddings")
        teacher_width = None if teacher_embeddings is None else teacher_embeddings.shape[1]
        check_hidden_state_options(config, isinstance(model, BaseBiasClassifier))
        self.trained: torch.nn.Module = (
            ClassifierWithTrainingHeads(model, tags_biased_words, teacher_width)
            if tags_biased_words or teacher_width else model)
        self.train_data = TokenizedDataset(splits.train, tokenizer, config.data.max_length,
                                           tag_biased_words=tags_biased_words,
                                           teacher_targets=teacher_targets)
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
        with self.precision.autocast():
            if isinstance(self.trained, ClassifierWithTrainingHeads):
                outputs = forward_model(batch["input_ids"], batch["attention_mask"],
                                        batch.get("token_labels"))
            else:
                outputs = HeadOutputs(forward_logits(forward_model, batch))
        logits = outputs.logits.float()
        self.loss_function.to(logits.device)
        losses = self.loss_function(logits, batch["labels"])
        distillation = self.config.training.distillation
        if "soft_targets" in batch:
            losses = distillation_losses(losses, logits, batch["soft_targets"],
                                         distillation.temperature, distillation.soft_weight)
        if outputs.embedding is not None:
            losses = losses + distillation.embedding_weight * embedding_distances(
                outputs.embedding.float(), batch["teacher_embeddings"])
        return losses, outputs.tagging_loss

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
        if isinstance(self.trained, ClassifierWithTrainingHeads):
            return self.trained.heads_state()
        return {}

    def load_extra_state(self, saved: dict) -> None:
        if isinstance(self.trained, ClassifierWithTrainingHeads):
            self.trained.load_heads_state(saved)
