"""Export a trained model for fast CPU inference: ONNX (fp32) and ONNX int8 dynamic quantisation.

An export directory (``RUN/exports/``) holds ``model.onnx``, ``model-int8.onnx``, the tokenizer,
``config.json``, ``label_names.json``, ``calibration.json`` and ``languages.json``, so that
``BiasClassifier().load_model("RUN/exports/model-int8.onnx")`` needs nothing else, and
``export_report.json``: how far each export agrees with the PyTorch model on the test split.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from backend.ml.languages import LANGUAGES_FILE
from backend.ml.metrics import classification_metrics

from .calibration import CALIBRATION_FILE
from .loading import ONNX_FILE, ONNX_INT8_FILE, LoadedModel

FORMATS = {"onnx": ONNX_FILE, "int8": ONNX_INT8_FILE}
MAX_F1_DROP_POINTS = 0.5  # an export may cost at most half a point of macro F1 on the test split
# Files that make an export directory loadable without the PyTorch weights.
_BUNDLE_FILES = ("config.json", "label_names.json", CALIBRATION_FILE, LANGUAGES_FILE,
                 "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                 "merges.txt", "added_tokens.json", "sentencepiece.bpe.model", "spiece.model")


def export_onnx(loaded: LoadedModel, path: Path, opset: int = 17) -> Path:
    """Trace the PyTorch model into ``path`` with dynamic batch and sequence axes.

    >>> export_onnx(load_torch_model(Path("RUN/final_model")),
    ...             Path("RUN/exports/model.onnx"))  # doctest: +SKIP
    """
    import torch

    from ..models.outputs import LogitsOnly

    if loaded.model is None:
        raise ValueError("export_onnx needs a model loaded with PyTorch")
    names = list(loaded.input_names)

    sample = loaded.tokenizer(["A short sentence.", "A second, somewhat longer sample sentence."],
                              padding=True, return_tensors="pt")
    args = tuple(sample[name] for name in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["logits"] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow in HF code
        torch.onnx.export(LogitsOnly(loaded.model, names).eval(), args, str(temporary),
                          dynamo=False, input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
    temporary.replace(path)
    return path


def quantize_int8(onnx_path: Path, output_path: Path) -> Path:
    """Dynamic int8 quantisation of the weights (activations quantised on the fly), per channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # onnxruntime logs a "consider pre-processing" hint through the root logger on every call.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    temporary = output_path.with_name(f".{output_path.name}.partial")
    try:
        quantize_dynamic(str(onnx_path), str(temporary), weight_type=QuantType.QInt8,
                         per_channel=True)
    finally:
        root.setLevel(level)
    temporary.replace(output_path)
    return output_path


def copy_bundle(model_dir: Path, export_dir: Path) -> None:
    """Copy config, tokenizer, label names, calibration and training languages next to the
    ONNX files."""
    export_dir.mkdir(parents=True, exist_ok=True)
    for name in _BUNDLE_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, export_dir / name)


def compare_predictions(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray,
                        label_names: list[str]) -> dict:
    """Agreement, probability gap and macro-F1 drop (in points) of ``candidate`` vs ``reference``.

    >>> p = np.array([[0.9, 0.1], [0.2, 0.8]])
    >>> compare_predictions(p, p, np.array([0, 1]), ["Non-biased", "Biased"])["agreement"]
    1.0
    """
    reference_labels, candidate_labels = reference.argmax(axis=1), candidate.argmax(axis=1)
    reference_f1 = classification_metrics(labels, reference_labels, label_names)["f1_macro"]
    candidate_f1 = classification_metrics(labels, candidate_labels, label_names)["f1_macro"]
    drop = 100.0 * (reference_f1 - candidate_f1)
    gap = np.abs(reference - candidate) if len(labels) else np.zeros(1)
    same = reference_labels == candidate_labels
    return {"num_samples": int(len(labels)),
            "agreement": float(same.mean()) if len(labels) else 1.0,
            "max_probability_difference": float(gap.max()),
            "mean_probability_difference": float(gap.mean()),
            "f1_macro_pytorch": reference_f1, "f1_macro": candidate_f1,
            "f1_drop_points": drop, "passed": bool(drop <= MAX_F1_DROP_POINTS)}


def timed_probabilities(classifier, texts: list[str]) -> tuple[np.ndarray, float]:
    """Probabilities of ``texts`` and the sentences per second it took to get them."""
    started = time.perf_counter()
    probabilities = classifier.predict_proba(texts)
    return probabilities, len(texts) / max(time.perf_counter() - started, 1e-9)
