"""The project's own classification head on any transformers encoder (architecture ``custom``).

encoder → mean pooling (or the first token) → dropout → Linear + GELU → dropout → Linear

This file is copied next to the weights by ``save_pretrained`` and imported from there by
``AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)``, so it
imports nothing but torch and transformers.
"""

from __future__ import annotations

import inspect
from typing import cast

import torch
from torch import nn
from transformers import MODEL_MAPPING, AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import SequenceClassifierOutput


def mean_over_tokens(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None
                     ) -> torch.Tensor:
    """The mean of ``(batch, tokens, width)`` over each sentence's real tokens (all of them
    without a mask), ``(batch, width)``.

    >>> mean_over_tokens(torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]]),
    ...                  torch.tensor([[1, 1, 0]]))
    tensor([[2., 3.]])
    """
    if attention_mask is None:
        return hidden_states.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class BiasHeadConfig(PreTrainedConfig):
    """Encoder config (nested) plus the head's pooling, width and dropout."""

    model_type = "media_bias_head"
    sub_configs_defaults = {"encoder_config": SubConfigSpec(config_class=AutoConfig,
                                                            model_type="bert")}

    encoder_config: dict | PreTrainedConfig | None = None
    pooling: str = "mean"  # "mean" over non-padding tokens, or "cls" (the first token)
    head_hidden_size: int = 256
    head_dropout: float = 0.1
    initializer_range: float = 0.02


def _encoder_kwargs(encoder_config: PreTrainedConfig) -> dict:
    # BERT and RoBERTa add a pooler that mean/CLS pooling never uses: leave it out, so that
    # every parameter receives a gradient and the parameter count is honest.
    # The classes AutoModel builds. The mapping's value type is annotated as the tokenizer
    # mapping's (slow, fast) pair; a model mapping holds a single class.
    model_class = cast(type[PreTrainedModel], MODEL_MAPPING[type(encoder_config)])
    if "add_pooling_layer" in inspect.signature(model_class).parameters:
        return {"add_pooling_layer": False}
    return {}


class BiasHeadModel(PreTrainedModel):
    """Sequence classifier: a transformers encoder under a pooled MLP head.

    >>> config = BiasHeadConfig(encoder_config={"model_type": "bert", "hidden_size": 32,
    ...     "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    ...     id2label={0: "Non-biased", 1: "Biased"})
    >>> BiasHeadModel(config)(torch.tensor([[2, 5, 3]])).logits.shape
    torch.Size([1, 2])
    """

    config_class = BiasHeadConfig
    base_model_prefix = "encoder"
    main_input_name = "input_ids"

    def __init__(self, config: BiasHeadConfig):
        super().__init__(config)
        encoder_config = config.encoder_config
        num_labels = config.num_labels
        # Neither is None once the config is built: sub_configs_defaults turns a dict (or
        # nothing) into an encoder config, and id2label defaults to two labels.
        if not isinstance(encoder_config, PreTrainedConfig) or num_labels is None:
            raise TypeError(f"incomplete BiasHeadConfig: encoder_config={encoder_config!r}, "
                            f"num_labels={num_labels!r}")
        self.encoder = AutoModel.from_config(encoder_config, **_encoder_kwargs(encoder_config))
        self.dropout = nn.Dropout(config.head_dropout)
        self.dense = nn.Linear(encoder_config.hidden_size, config.head_hidden_size)
        self.activation = nn.GELU()
        self.classifier = nn.Linear(config.head_hidden_size, num_labels)
        # DistilBERT has no segment embeddings: only pass token_type_ids to encoders that take them.
        self._takes_token_type_ids = "token_type_ids" in inspect.signature(
            self.encoder.forward).parameters
        self.post_init()

    def pool(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None
             ) -> torch.Tensor:
        """One vector per sentence: the mean over real tokens, or the first token."""
        if self.config.pooling == "cls":
            return hidden_states[:, 0]
        return mean_over_tokens(hidden_states, attention_mask)

    def forward(self, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False,
                **kwargs) -> SequenceClassifierOutput:
        encoder_inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self._takes_token_type_ids:
            encoder_inputs["token_type_ids"] = token_type_ids
        encoded = self.encoder(**encoder_inputs, output_hidden_states=output_hidden_states)
        hidden_states = encoded.last_hidden_state
        pooled = self.dropout(self.pool(hidden_states, attention_mask))
        logits = self.classifier(self.dropout(self.activation(self.dense(pooled))))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, self.config.num_labels),
                                               labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits,
                                        hidden_states=encoded.hidden_states)


# save_pretrained copies this file next to the weights and writes an auto_map, so the saved
# directory loads with AutoModelForSequenceClassification.from_pretrained(dir,
# trust_remote_code=True) wherever transformers is installed.
BiasHeadConfig.register_for_auto_class()
BiasHeadModel.register_for_auto_class("AutoModelForSequenceClassification")
