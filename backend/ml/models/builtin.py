"""The built-in architectures: four transformers families and the project's custom head.

``bert``, ``distilbert``, ``roberta`` and ``electra`` are transformers'
``AutoModelForSequenceClassification``; ``custom`` is :class:`BiasHeadModel` on any encoder.
Each is either loaded from a pretrained checkpoint or, with ``pretrained: false``, initialised
at random from the sizes in the config with a tokenizer trained on the training sentences.
"""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PreTrainedConfig,
)

from ..config.schema import ModelConfig
from .bias_head import BiasHeadConfig, BiasHeadModel, _encoder_kwargs
from .factory import ModelFactory
from .families import FAMILIES, apply_dropout, check_family, random_config
from .sources import (
    load_config,
    load_tokenizer,
    load_weights,
    quiet_transformers,
    resolve_source,
)
from .tokenizer_training import train_tokenizer


def _label_maps(label_names: list[str]) -> dict:
    return {"id2label": dict(enumerate(label_names)),
            "label2id": {name: index for index, name in enumerate(label_names)}}


def _trained_tokenizer(family: str, model_config: ModelConfig, texts: list[str] | None):
    tokenizer = train_tokenizer(family, texts or [], model_config.vocab_size)
    special_ids = {"pad": tokenizer.pad_token_id, "bos": tokenizer.bos_token_id,
                   "eos": tokenizer.eos_token_id}
    encoder_config = random_config(family, model_config, len(tokenizer), special_ids)
    return tokenizer, encoder_config


def _pretrained_config(model_config: ModelConfig):
    source = resolve_source(model_config.model_name)
    checkpoint_config = load_config(source)
    apply_dropout(checkpoint_config, model_config.dropout)
    return source, checkpoint_config


def _sequence_classifier(family: str):
    def build(model_config: ModelConfig, label_names: list[str], texts: list[str] | None):
        if not model_config.pretrained:
            tokenizer, config = _trained_tokenizer(family, model_config, texts)
            for key, value in _label_maps(label_names).items():
                setattr(config, key, value)
            with quiet_transformers():
                model = AutoModelForSequenceClassification.from_config(config)
            return model, tokenizer, None
        source, config = _pretrained_config(model_config)
        check_family(family, config, model_config.model_name)
        for key, value in _label_maps(label_names).items():
            setattr(config, key, value)
        model = load_weights(AutoModelForSequenceClassification, source, config=config)
        return model, load_tokenizer(source), source.location
    build.__name__ = f"build_{family}"
    build.__doc__ = f"{family} via AutoModelForSequenceClassification."
    return build


for _family in FAMILIES:
    ModelFactory._register_builder(_family)(_sequence_classifier(_family))


def _head_config(model_config: ModelConfig, encoder_config: PreTrainedConfig,
                 label_names: list[str]) -> BiasHeadConfig:
    return BiasHeadConfig(encoder_config=encoder_config, pooling=model_config.pooling,
                          head_hidden_size=model_config.head_hidden_size,
                          head_dropout=float(model_config.dropout),
                          initializer_range=getattr(encoder_config, "initializer_range", 0.02),
                          **_label_maps(label_names))


# Within this project the Auto classes know the custom head, so a saved custom model loads with
# plain AutoModelForSequenceClassification / AutoTokenizer, running no code from its directory
# and asking no trust_remote_code question. Elsewhere the code saved beside it is used.
AutoConfig.register(BiasHeadConfig.model_type, BiasHeadConfig, exist_ok=True)
AutoModelForSequenceClassification.register(BiasHeadConfig, BiasHeadModel, exist_ok=True)


@ModelFactory._register_builder("custom")
def build_custom(model_config: ModelConfig, label_names: list[str], texts: list[str] | None):
    """This project's head (pooling → dropout → GELU MLP → logits) on an encoder."""
    if not model_config.pretrained:
        tokenizer, encoder_config = _trained_tokenizer(model_config.encoder_architecture,
                                                       model_config, texts)
        model = BiasHeadModel(_head_config(model_config, encoder_config, label_names))
        return model, tokenizer, None
    source, encoder_config = _pretrained_config(model_config)
    encoder = load_weights(AutoModel, source, config=encoder_config,
                           **_encoder_kwargs(encoder_config))
    model = BiasHeadModel(_head_config(model_config, encoder.config, label_names))
    model.encoder.load_state_dict(encoder.state_dict())
    return model, load_tokenizer(source), source.location
