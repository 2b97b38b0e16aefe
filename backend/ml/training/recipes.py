"""Fine-tuning recipes beyond plain AdamW, each switched on by one config field.

- ``layerwise_lr_scales``: layer-wise learning-rate decay (``training.layerwise_lr_decay``).
- ``ClassifierWithTrainingHeads``: the sentence classifier plus a biased-word tagging head
  (``training.biased_words_loss_weight``) and a map to a teacher's sentence embeddings
  (``training.distillation.embedding_weight``).
- ``WeightAverage``: the average of the last evaluated weights
  (``training.average_last_checkpoints``).
- ``distillation_losses``: the hard loss mixed with the KL divergence to a teacher's tempered
  probabilities (``training.distillation``); ``embedding_distances``: how far a student's
  mapped sentence embeddings are from the teacher's.

Re-initialising top layers (``model.reinit_layers``) happens when the model is built
(``models.reinitialize_top_layers``); label smoothing is the loss function's own option.
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

import torch
from torch import nn

from ..models import embeddings_and_layers
from ..models.outputs import model_logits, sentence_embedding


def layerwise_lr_scales(model: nn.Module, decay: float) -> dict[int, float]:
    """Learning-rate factor per parameter (by ``id``): 1 for the head and the top encoder layer,
    ``decay`` per layer further down, ``decay ** layers`` for the embeddings.

    >>> scales = layerwise_lr_scales(built.model, 0.9)  # doctest: +SKIP
    """
    if decay == 1.0:
        return {}
    embeddings, layers = embeddings_and_layers(model)
    scales = {}
    for depth_from_top, layer in enumerate(reversed(layers)):
        for parameter in layer.parameters():
            scales[id(parameter)] = decay ** depth_from_top
    for module in embeddings:
        for parameter in module.parameters():
            scales[id(parameter)] = decay ** len(layers)
    return scales


class HeadOutputs(NamedTuple):
    """What :class:`ClassifierWithTrainingHeads` returns for a batch (a tuple, which
    ``torch.compile`` and DistributedDataParallel pass through as they do the logits)."""

    logits: torch.Tensor
    tagging_loss: torch.Tensor | None = None
    """The biased-word tagger's cross-entropy over the batch's scored tokens."""
    embedding: torch.Tensor | None = None
    """The sentence embeddings mapped to the teacher's width, ``(batch, teacher width)``."""


class ClassifierWithTrainingHeads(nn.Module):
    """The classifier and the heads only training uses, trained together: a linear tagging head
    on its last hidden states (``training.biased_words_loss_weight``), and a linear map of its
    sentence embedding to a teacher's (``training.distillation.embedding_weight``).

    Only ``classifier`` is saved as the model; the heads exist for their losses alone (a
    checkpoint keeps their weights so that a resumed run continues exactly).

    >>> trained = ClassifierWithTrainingHeads(classifier, tags_tokens=True)  # doctest: +SKIP
    >>> trained(ids, mask, tags).tagging_loss  # doctest: +SKIP
    """

    def __init__(self, classifier: nn.Module, tags_tokens: bool = False,
                 teacher_embedding_size: int | None = None):
        super().__init__()
        self.classifier = classifier
        # A transformers config, or ModelConfig for a registered model; this project's head
        # keeps its encoder's config nested, and DistilBERT names the width ``dim``.
        config: Any = getattr(classifier.config, "encoder_config", None) or classifier.config
        hidden_size = getattr(config, "hidden_size", None) or config.dim
        self.token_head = nn.Linear(hidden_size, 2) if tags_tokens else None
        self.embedding_projection = (nn.Linear(hidden_size, teacher_embedding_size)
                                     if teacher_embedding_size else None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_labels: torch.Tensor | None = None) -> HeadOutputs:
        output = self.classifier(input_ids=input_ids, attention_mask=attention_mask,
                                 output_hidden_states=True)
        tagging_loss = embedding = None
        if self.token_head is not None and token_labels is not None:
            token_logits = self.token_head(output.hidden_states[-1])
            tagging_loss = nn.functional.cross_entropy(
                token_logits.float().flatten(0, 1), token_labels.flatten(), ignore_index=-100)
        if self.embedding_projection is not None:
            embedding = self.embedding_projection(sentence_embedding(output, attention_mask))
        return HeadOutputs(model_logits(output), tagging_loss, embedding)

    def heads_state(self) -> dict:
        """The heads' weights by name, for a checkpoint."""
        return {name: head.state_dict() for name, head in self._heads().items()}

    def load_heads_state(self, saved: dict) -> None:
        for name, head in self._heads().items():
            head.load_state_dict(saved[name])

    def _heads(self) -> dict[str, nn.Module]:
        return {name: head for name, head in (("token_head", self.token_head),
                                              ("embedding_projection", self.embedding_projection))
                if head is not None}


class WeightAverage:
    """The last ``size`` snapshots of a model's weights (on the CPU), the steps they were taken
    at, and their average."""

    def __init__(self, size: int):
        self.snapshots: deque[dict[str, torch.Tensor]] = deque(maxlen=size)
        self.steps: deque[int] = deque(maxlen=size)

    def add(self, model: nn.Module, step: int = 0) -> None:
        self.snapshots.append({name: value.detach().to("cpu", copy=True)
                               for name, value in model.state_dict().items()})
        self.steps.append(step)

    def average(self) -> dict[str, torch.Tensor]:
        """Floating-point tensors averaged; the others (e.g. position ids) from the last one."""
        last = self.snapshots[-1]
        return {name: (torch.stack([snapshot[name] for snapshot in self.snapshots]).mean(0)
                       if value.is_floating_point() else value)
                for name, value in last.items()}


def distillation_losses(hard_losses: torch.Tensor, logits: torch.Tensor,
                        soft_targets: torch.Tensor, temperature: float, soft_weight: float
                        ) -> torch.Tensor:
    """Per sentence: ``(1 - soft_weight) * hard + soft_weight * T² * KL(teacher_T || student_T)``
    (Hinton et al., 2015); ``soft_targets`` are the teacher's probabilities at temperature T.
    T² keeps the soft gradients as large as the hard ones whatever the temperature.

    >>> distillation_losses(torch.zeros(1), torch.tensor([[0.0, 0.0]]),
    ...                     torch.tensor([[0.5, 0.5]]), 2.0, 0.5)
    tensor([0.])
    """
    log_student = torch.log_softmax(logits / temperature, dim=-1)
    divergence = nn.functional.kl_div(log_student, soft_targets, reduction="none").sum(dim=-1)
    return (1 - soft_weight) * hard_losses + soft_weight * temperature ** 2 * divergence


def embedding_distances(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per sentence: 1 - cosine similarity of the student's mapped embedding and the teacher's,
    0 when they point the same way, whatever their lengths (FitNets, Romero et al., 2015, match
    hidden states the same way through a learned map).

    >>> embedding_distances(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0],
    ...                     [1.0, 0.0]]))
    tensor([0., 1.])
    """
    return 1 - nn.functional.cosine_similarity(student, teacher, dim=-1)
