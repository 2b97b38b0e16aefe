"""Inference on trained run directories: ``BiasClassifier``, calibration, ONNX / int8 export.

Heavy optional dependencies (onnx, onnxruntime) are imported only by the functions that use them.
"""

from ..lazy_exports import lazy_exports

__all__ = ["NO_PREDICTION", "BiasClassifier", "InputError", "ModelLoadError",
           "calibration_report", "expected_calibration_error", "fit_and_save_calibration",
           "fit_temperature", "sentence_spans", "split_sentences"]
# Imported on first use (numpy, the model runtimes): the CLI's parser imports only ``.commands``.
__getattr__, __dir__ = lazy_exports(__name__, {
    "calibration_report": ".calibration", "expected_calibration_error": ".calibration",
    "fit_and_save_calibration": ".calibration", "fit_temperature": ".calibration",
    "NO_PREDICTION": ".classifier", "BiasClassifier": ".classifier", "InputError": ".classifier",
    "ModelLoadError": ".loading", "sentence_spans": ".sentences",
    "split_sentences": ".sentences"})
