"""Public import path for the model registry (kept stable for existing user code).

>>> from backend.ml.model_factory import ModelFactory, BaseBiasClassifier, BuiltModel
"""

from .models import (
                     BaseBiasClassifier,
                     BuiltModel,
                     ModelFactory,
                     describe_model,
                     load_saved_model,
                     save_model,
)

__all__ = ["BaseBiasClassifier", "BuiltModel", "ModelFactory", "describe_model",
           "load_saved_model", "save_model"]
