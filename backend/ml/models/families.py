"""What differs between the encoder families: config names, dropout knobs, where the layers are.

Everything per family lives in this one file, so adding a family means adding entries here.
"""

from __future__ import annotations

from typing import TypedDict

from torch import nn
from transformers import (
    BertConfig,
    DistilBertConfig,
    ElectraConfig,
    MPNetConfig,
    PreTrainedConfig,
    PreTrainedModel,
    RobertaConfig,
)

from ..config.schema import ModelConfig
from ..errors import ConfigError
from .tokenizer_training import MAX_LENGTH

FAMILIES = ("bert", "distilbert", "roberta", "electra", "mpnet")

# Checkpoint model types each architecture name accepts (a RoBERTa-style architecture loads
# XLM-R and CamemBERT checkpoints too).
FAMILY_MODEL_TYPES = {
    "bert": ("bert",),
    "distilbert": ("distilbert",),
    "roberta": ("roberta", "xlm-roberta", "camembert"),
    "electra": ("electra",),
    "mpnet": ("mpnet",),
}

# Config attributes holding a dropout probability, across families: BERT/RoBERTa/ELECTRA
# (hidden, attention, classifier) and DistilBERT (dropout, attention_dropout, seq_classif_dropout).
# Only the ones a config already has are set, so unknown encoders get what they support.
DROPOUT_ATTRIBUTES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",
                      "dropout", "attention_dropout", "seq_classif_dropout")


def check_family(architecture: str, checkpoint_config: PreTrainedConfig, model_name: str) -> None:
    """Refuse e.g. ``architecture: roberta`` on a BERT checkpoint: the run would be mislabelled."""
    model_type = checkpoint_config.model_type
    if model_type in FAMILY_MODEL_TYPES[architecture]:
        return
    matching = [name for name, types in FAMILY_MODEL_TYPES.items() if model_type in types]
    fix = (f"set model.architecture: {matching[0]}" if matching else
           "use architecture custom, which puts this project's head on any encoder")
    raise ConfigError("model", [
        f"model.architecture: is {architecture!r}, but model.model_name {model_name!r} is a "
        f"{model_type!r} checkpoint; {fix}, or pick a {architecture} checkpoint"])


def apply_dropout(config: PreTrainedConfig, probability: float) -> list[str]:
    """Set every dropout probability ``config`` knows to ``probability``; returns the names set."""
    names = [name for name in DROPOUT_ATTRIBUTES if hasattr(config, name)]
    for name in names:
        setattr(config, name, float(probability))
    return names


class EncoderSizes(TypedDict):
    """Constructor arguments that BERT, ELECTRA and RoBERTa configs share."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    pad_token_id: int


def random_config(family: str, model: ModelConfig, vocab_size: int, special_ids: dict[str, int]
                  ) -> PreTrainedConfig:
    """Config of a randomly initialised ``family`` encoder with the sizes in ``model``.

    ``special_ids`` maps pad/bos/eos to the ids of the trained tokenizer. Position embeddings
    cover ``MAX_LENGTH`` (512) tokens in every family.
    """
    sizes: EncoderSizes = {"vocab_size": vocab_size, "hidden_size": model.hidden_size,
                           "num_hidden_layers": model.num_hidden_layers,
                           "num_attention_heads": model.num_attention_heads,
                           "intermediate_size": model.intermediate_size,
                           "max_position_embeddings": MAX_LENGTH,
                           "pad_token_id": special_ids["pad"]}
    config: PreTrainedConfig
    if family == "bert":
        config = BertConfig(**sizes)
    elif family == "electra":
        config = ElectraConfig(embedding_size=model.hidden_size, **sizes)
    elif family == "roberta":
        # RoBERTa numbers positions from pad_token_id + 1, so it needs that many extra slots.
        sizes["max_position_embeddings"] = MAX_LENGTH + special_ids["pad"] + 1
        config = RobertaConfig(type_vocab_size=1, bos_token_id=special_ids["bos"],
                               eos_token_id=special_ids["eos"], **sizes)
    elif family == "mpnet":
        # MPNet numbers positions from its padding id (always 1) + 1, like RoBERTa.
        sizes["max_position_embeddings"] = MAX_LENGTH + special_ids["pad"] + 1
        config = MPNetConfig(bos_token_id=special_ids["bos"], eos_token_id=special_ids["eos"],
                             **sizes)
    elif family == "distilbert":
        config = DistilBertConfig(vocab_size=vocab_size, dim=model.hidden_size,
                                  n_layers=model.num_hidden_layers,
                                  n_heads=model.num_attention_heads,
                                  hidden_dim=model.intermediate_size,
                                  max_position_embeddings=MAX_LENGTH,
                                  pad_token_id=special_ids["pad"])
    else:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    apply_dropout(config, model.dropout)
    return config


def encoder_parts(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """``(embedding modules, encoder layers in order)`` of a transformers classifier or encoder.

    BERT, RoBERTa and ELECTRA keep their layers in ``encoder.layer``, DistilBERT in
    ``transformer.layer``; other encoders are searched for the layer list by its length.
    """
    base = model.base_model if isinstance(model, PreTrainedModel) else model
    embeddings = [getattr(base, name) for name in ("embeddings", "embeddings_project")
                  if isinstance(getattr(base, name, None), nn.Module)]
    for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers"):
        layers: object = base
        for part in path.split("."):
            layers = getattr(layers, part, None)
        if isinstance(layers, nn.ModuleList):
            return embeddings, list(layers)
    depth = getattr(getattr(base, "config", None), "num_hidden_layers", None)
    for module in base.modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            return embeddings, list(module)
    return embeddings, []
