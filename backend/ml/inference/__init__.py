"""Inference on trained run directories: ``BiasClassifier``, calibration, ONNX / int8 export.

Heavy optional dependencies (onnx, onnxruntime) are imported only by the functions that use them.
"""

from .calibration import (
                          calibration_report,
                          expected_calibration_error,
                          fit_and_save_calibration,
                          fit_temperature,
)
from .classifier import NO_PREDICTION, BiasClassifier, InputError
from .loading import ModelLoadError
from .sentences import sentence_spans, split_sentences

__all__ = ["NO_PREDICTION", "BiasClassifier", "InputError", "ModelLoadError",
           "calibration_report", "expected_calibration_error", "fit_and_save_calibration",
           "fit_temperature", "sentence_spans", "split_sentences"]
