"""The base class for classifiers users register with ``ModelFactory.register_model``."""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from ..config.schema import ModelConfig


class BaseBiasClassifier(nn.Module):
    """A sentence classifier built from a ``ModelConfig`` alone.

    The factory passes a copy of the model section with ``num_labels`` set to the number of
    labels and ``vocab_size`` to the tokenizer's vocabulary. Subclasses build their layers in
    ``__init__`` and return ``self.classifier_output(logits, labels)`` from ``forward``.
    Overriding ``embedding_modules`` and ``encoder_layers`` makes ``freeze_layers`` work;
    setting ``self.hidden_size`` makes it show in the model info.

    >>> @ModelFactory.register("bag_of_words")  # doctest: +SKIP
    ... class BagOfWords(BaseBiasClassifier):
    ...     def __init__(self, config):
    ...         super().__init__(config)
    ...         self.embed = nn.EmbeddingBag(config.vocab_size, config.hidden_size)
    ...         self.out = nn.Linear(config.hidden_size, config.num_labels)
    ...     def forward(self, input_ids, attention_mask=None, labels=None):
    ...         return self.classifier_output(self.out(self.embed(input_ids)), labels)
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> SequenceClassifierOutput:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(input_ids, "
                                  f"attention_mask=None, labels=None)")

    def classifier_output(self, logits: torch.Tensor, labels: torch.Tensor | None = None
                          ) -> SequenceClassifierOutput:
        """Wrap ``logits`` the way transformers classifiers answer, with cross-entropy loss."""
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]),
                                               labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def embedding_modules(self) -> list[nn.Module]:
        """Modules frozen by any ``freeze_layers`` > 0 (none by default)."""
        return []

    def encoder_layers(self) -> list[nn.Module]:
        """Layers in input-to-output order; ``freeze_layers: N`` freezes the first N."""
        return []
