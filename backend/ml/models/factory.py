"""The model registry: architecture names from the config → built model, tokenizer and info.

A dict behind a decorator: a duplicate name is an error, an unknown name lists the valid ones.
Built-in names (bert, distilbert, roberta, electra, custom) map to builder functions; names
added with ``register_model`` map to ``BaseBiasClassifier`` subclasses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..config.loading import did_you_mean
from ..config.schema import ModelConfig
from ..errors import ConfigError, UserError
from .base import BaseBiasClassifier
from .bias_head import BiasHeadModel
from .families import encoder_parts
from .sources import load_tokenizer, resolve_source
from .tokenizer_training import train_tokenizer

logger = logging.getLogger(__name__)

# (model config, label names, training texts) -> (model, tokenizer, source or None)
Builder = Callable[[ModelConfig, list[str], "list[str] | None"],
                   "tuple[nn.Module, PreTrainedTokenizerBase, str | None]"]


@dataclass
class BuiltModel:
    """What ``ModelFactory.create`` returns."""

    model: nn.Module
    """``forward(input_ids, attention_mask=None, labels=None)`` → ``.logits`` (and ``.loss``)."""
    tokenizer: PreTrainedTokenizerBase
    info: dict
    """architecture, model_name, source, pretrained, total/trainable_parameters, num_layers,
    hidden_size, frozen_layers, vocab_size."""


class ModelFactory:
    """Registry of model architectures.

    >>> built = ModelFactory.create(ModelConfig(architecture="bert", model_name="minilm"),
    ...                             ["Non-biased", "Biased", "No agreement"])  # doctest: +SKIP
    >>> built.info["num_layers"], built.info["hidden_size"]  # doctest: +SKIP
    (6, 384)
    """

    _registry: ClassVar[dict[str, Any]] = {}

    @classmethod
    def register(cls, name: str) -> Callable[[type], type]:
        """Class decorator: ``@ModelFactory.register("my_model")`` on a BaseBiasClassifier."""
        def decorator(model_class: type) -> type:
            cls.register_model(name, model_class)
            return model_class
        return decorator

    @classmethod
    def register_model(cls, name: str, model_class: type) -> None:
        """Make ``model.architecture: <name>`` build ``model_class(config)``.

        >>> ModelFactory.register_model("my_custom", MyClassifier)  # doctest: +SKIP
        """
        if not (isinstance(model_class, type) and issubclass(model_class, BaseBiasClassifier)):
            raise TypeError(f"ModelFactory.register_model({name!r}, ...): {model_class!r} must be "
                            f"a subclass of BaseBiasClassifier")
        cls._add(name, model_class)

    @classmethod
    def _register_builder(cls, name: str) -> Callable[[Builder], Builder]:
        def decorator(builder: Builder) -> Builder:
            cls._add(name, builder)
            return builder
        return decorator

    @classmethod
    def _add(cls, name: str, entry: Any) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"model names must be non-empty strings, got {name!r}")
        if name in cls._registry:
            raise ValueError(f"model architecture {name!r} is already registered (by "
                             f"{_describe_entry(cls._registry[name])}); choose another name")
        cls._registry[name] = entry

    @classmethod
    def unregister(cls, name: str) -> None:
        """Remove a name added with ``register_model`` (built-in names stay)."""
        if name in cls._registry and cls.builds_registered_class(name):
            del cls._registry[name]

    @classmethod
    def available_models(cls) -> list[str]:
        """Every name ``model.architecture`` accepts, built-ins first."""
        return list(cls._registry)

    @classmethod
    def registered_name(cls, model_class: type) -> str | None:
        """The name ``model_class`` was registered under, if any."""
        return next((name for name, entry in cls._registry.items() if entry is model_class), None)

    @classmethod
    def builds_registered_class(cls, name: str) -> bool:
        """Whether ``model.architecture: <name>`` builds a class added with ``register_model``
        (a ``BaseBiasClassifier``, which gives logits but no hidden states)."""
        entry = cls.lookup(name)
        return isinstance(entry, type) and issubclass(entry, BaseBiasClassifier)

    @classmethod
    def lookup(cls, name: str) -> Any:
        """The registry entry for ``name``; a ConfigError listing the choices if there is none."""
        if name not in cls._registry:
            choices = ", ".join(cls._registry)
            raise ConfigError("model", [
                f"model.architecture: unknown architecture {name!r}"
                f"{did_you_mean(name, cls._registry)}; choose one of: {choices}"])
        return cls._registry[name]

    @classmethod
    def create(cls, model_config: ModelConfig, label_names: Sequence[str],
               training_texts: Sequence[str] | None = None) -> BuiltModel:
        """Build the model named by ``model_config.architecture`` for ``label_names``.

        ``training_texts`` train the tokenizer when ``model_config.pretrained`` is false.
        Seed torch (``torch.manual_seed``) before calling for a reproducible initialisation.
        """
        entry = cls.lookup(model_config.architecture)
        label_names = [str(name) for name in label_names]
        if len(label_names) < 2:
            raise UserError(f"a classifier needs at least two labels, got {label_names}")
        if model_config.num_labels != len(label_names):
            logger.warning("model.num_labels is %d but the data has %d labels (%s); building "
                           "%d outputs", model_config.num_labels, len(label_names),
                           ", ".join(label_names), len(label_names))
        texts = list(training_texts) if training_texts is not None else None
        if isinstance(entry, type):
            model, tokenizer, source = _build_registered(entry, model_config, label_names, texts)
        else:
            if not model_config.pretrained:  # fail before training a tokenizer
                _check_freeze(model_config, model_config.num_hidden_layers)
            model, tokenizer, source = entry(model_config, label_names, texts)
        reinitialize_top_layers(model, model_config.reinit_layers,
                                getattr(getattr(model, "config", None), "initializer_range", 0.02))
        frozen = freeze_layers(model, model_config.freeze_layers,
                               model_config.model_name if model_config.pretrained else None)
        info = {"architecture": model_config.architecture, "model_name": model_config.model_name,
                "source": source, "pretrained": model_config.pretrained,
                **describe_model(model), "frozen_layers": frozen, "vocab_size": len(tokenizer)}
        logger.info("Built %s model: %s parameters (%s trainable), %s layers, hidden size %s",
                    model_config.architecture, f"{info['total_parameters']:,}",
                    f"{info['trainable_parameters']:,}", info["num_layers"], info["hidden_size"])
        return BuiltModel(model=model, tokenizer=tokenizer, info=info)


def _describe_entry(entry: Any) -> str:
    if isinstance(entry, type):
        return f"class {entry.__module__}.{entry.__qualname__}"
    return "a built-in builder"


def _build_registered(model_class: type, model_config: ModelConfig, label_names: list[str],
                      texts: list[str] | None):
    """A user class: a tokenizer from model_name (or trained), then ``model_class(config)``."""
    if model_config.pretrained:
        source = resolve_source(model_config.model_name)
        tokenizer = load_tokenizer(source)
        location = source.location
    else:
        tokenizer = train_tokenizer(model_config.encoder_architecture, texts or [],
                                    model_config.vocab_size)
        location = None
    # The contract is forward(input_ids, attention_mask=None, labels=None): no segment ids.
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    config = replace(model_config, num_labels=len(label_names), vocab_size=len(tokenizer))
    model = model_class(config)
    if not isinstance(getattr(model, "config", None), ModelConfig):
        raise TypeError(f"{model_class.__name__}.__init__ must call super().__init__(config)")
    return model, tokenizer, location


def _too_deep(count: int, layers: int, what: str) -> ConfigError:
    return ConfigError("model", [
        f"model.freeze_layers: must be <= {layers}, the number of encoder layers of {what}, "
        f"got {count}"])


def _check_freeze(model_config: ModelConfig, layers: int) -> None:
    if model_config.freeze_layers > layers:
        raise _too_deep(model_config.freeze_layers, layers, "this model")


def embeddings_and_layers(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """``(embedding modules, encoder layers bottom to top)`` of any model the registry builds."""
    if isinstance(model, BaseBiasClassifier):
        return list(model.embedding_modules()), list(model.encoder_layers())
    return encoder_parts(model)


def set_attention(model: nn.Module, implementation: str) -> None:
    """Switch the first transformers model inside ``model`` (itself, or the encoder under a
    custom head) to ``implementation`` (sdpa or eager); other modules are left as they are.
    An encoder with a single implementation (MPNet's is eager) keeps it."""
    # The custom head has no attention of its own: its encoder is what switches.
    target = model.encoder if isinstance(model, BiasHeadModel) else model
    for module in target.modules():
        if isinstance(module, PreTrainedModel):
            module.set_attn_implementation(implementation)
            return


def freeze_layers(model: nn.Module, count: int, model_name: str | None = None) -> int:
    """Freeze the embeddings and the first ``count`` encoder layers; returns ``count``.

    >>> freeze_layers(built.model, 2)  # doctest: +SKIP
    2
    """
    if count <= 0:
        return 0
    embeddings, layers = embeddings_and_layers(model)
    if count > len(layers):
        raise _too_deep(count, len(layers), model_name or "this model")
    for module in [*embeddings, *layers[:count]]:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    return count


def reinitialize_top_layers(model: nn.Module, count: int, std: float = 0.02) -> int:
    """Give the top ``count`` encoder layers fresh weights (normal(0, std) linear weights, zero
    biases, unit LayerNorms): pretrained top layers are the most specific to the pre-training
    task, and fine-tuning small data often goes better from a fresh start there.

    >>> reinitialize_top_layers(built.model, 1)  # doctest: +SKIP
    1
    """
    if count <= 0:
        return 0
    _, layers = embeddings_and_layers(model)
    if count > len(layers):
        raise _too_deep(count, len(layers), "this model")
    for layer in layers[-count:]:
        for module in layer.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
    return count


def _sizes(model: nn.Module) -> tuple[int | None, int | None]:
    if isinstance(model, BaseBiasClassifier):
        layers = len(model.encoder_layers()) or getattr(model, "num_layers", None)
        return layers, getattr(model, "hidden_size", None)
    if isinstance(model, PreTrainedModel):
        config = model.config
        if isinstance(model, BiasHeadModel):
            config = config.encoder_config
        return getattr(config, "num_hidden_layers", None), getattr(config, "hidden_size", None)
    return None, None


def describe_model(model: nn.Module) -> dict:
    """Parameter counts and sizes of a built model.

    >>> describe_model(built.model)  # doctest: +SKIP
    {'total_parameters': 22714371, 'trainable_parameters': 22714371, 'num_layers': 6,
     'hidden_size': 384}
    """
    parameters = list(model.parameters())
    num_layers, hidden_size = _sizes(model)
    return {"total_parameters": sum(p.numel() for p in parameters),
            "trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
            "num_layers": num_layers, "hidden_size": hidden_size}
