"""Model layer: the architecture registry, the custom head, and saving ``final_model/``.

>>> from backend.ml.models import ModelFactory, save_model, load_saved_model
>>> built = ModelFactory.create(config.model, label_names, training_texts)  # doctest: +SKIP
>>> save_model(built.model, built.tokenizer, run_dir / "final_model", label_names)  # doctest: +SKIP

Imports only the config layer; knows nothing of training, tracking or the cloud.
"""

# Importing builtin registers bert, distilbert, roberta, electra and custom.
from . import builtin as _builtin  # noqa: F401
from .base import BaseBiasClassifier
from .bias_head import BiasHeadConfig, BiasHeadModel
from .factory import (
                      BuiltModel,
                      ModelFactory,
                      describe_model,
                      embeddings_and_layers,
                      freeze_layers,
                      reinitialize_top_layers,
                      set_attention,
)
from .saving import load_saved_model, save_model
from .sources import Source, resolve_source

__all__ = ["BaseBiasClassifier", "BiasHeadConfig", "BiasHeadModel", "BuiltModel",
           "ModelFactory", "Source", "describe_model", "freeze_layers", "load_saved_model",
           "resolve_source", "save_model", "set_attention", "embeddings_and_layers",
           "reinitialize_top_layers"]
