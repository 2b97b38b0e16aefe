"""Public import path of the news app's classifier.

>>> from backend.ml.bias_classifier import BiasClassifier
>>> classifier = BiasClassifier()
>>> classifier.load_model("experiments/runs/quickstart_minilm_3f9a1c/final_model")  # doctest: +SKIP
>>> classifier.predict_with_confidence(["Some sentence."])  # doctest: +SKIP

See docs/inference.md.
"""

from .inference.classifier import NO_PREDICTION, BiasClassifier, InputError
from .inference.loading import ModelLoadError

__all__ = ["NO_PREDICTION", "BiasClassifier", "InputError", "ModelLoadError"]
