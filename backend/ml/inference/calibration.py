"""Temperature scaling: one number that makes a confidence of 0.8 mean "right 80% of the time".

Fitted on the validation split at the end of training (Guo et al., 2017, "On Calibration of Modern
Neural Networks"), saved as ``calibration.json`` next to the model, and applied by
:class:`~backend.ml.inference.classifier.BiasClassifier` before every softmax. Dividing the logits
by a positive temperature never changes which class wins, so accuracy and F1 are untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from backend.ml.fileio import atomic_write_json
from backend.ml.metrics import softmax

CALIBRATION_FILE = "calibration.json"
NUM_BINS = 15
# Search range of the inverse temperature 1/T: wide enough for any real model, and bounded so
# that a model no better than chance gets a very flat (T = 100) rather than an infinite temperature.
_MIN_INVERSE_T, _MAX_INVERSE_T = 0.01, 100.0


def _checked(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(int, copy=False)
    if logits.ndim != 2 or labels.ndim != 1 or len(logits) != len(labels):
        raise ValueError(f"expected logits (n, classes) and labels (n,), got {logits.shape} "
                         f"and {labels.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("logits contain NaN or infinity")
    if len(labels) and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got "
                         f"{labels.min()}..{labels.max()}")
    return logits, labels


def expected_calibration_error(probabilities, labels, num_bins: int = NUM_BINS) -> float:
    """Top-label ECE: the gap between confidence and accuracy, averaged over equal-width bins.

    ``probabilities`` are rows that sum to 1 (use :func:`backend.ml.metrics.softmax` on logits).

    >>> expected_calibration_error([[0.9, 0.1], [0.9, 0.1]], [0, 1])  # 90% sure, 50% right
    0.4
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels).astype(int, copy=False)
    if len(labels) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    # Bins are (lower, upper]; a confidence of exactly 0 cannot occur for a softmax output.
    bins = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
    error = 0.0
    for index in range(num_bins):
        in_bin = bins == index
        if in_bin.any():
            error += in_bin.mean() * abs(confidence[in_bin].mean() - correct[in_bin].mean())
    return round(float(error), 12)


def _negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    log_probabilities = log_softmax(logits / temperature, axis=1)
    return float(-log_probabilities[np.arange(len(labels)), labels].mean())


def fit_temperature(logits, labels) -> float:
    """The temperature T > 0 that minimises the negative log-likelihood of ``softmax(logits / T)``.

    The NLL is convex in 1/T, so a bounded 1-D search finds the global optimum without the
    learning-rate and step-count choices of a gradient optimiser.

    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 3, 500)
    >>> over_confident = 10 * (np.eye(3)[labels] + rng.normal(0, 1, (500, 3)))
    >>> fit_temperature(over_confident, labels) > 1
    True
    """
    logits, labels = _checked(logits, labels)
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on zero samples")
    result = minimize_scalar(lambda beta: _negative_log_likelihood(logits, labels, 1.0 / beta),
                             bounds=(_MIN_INVERSE_T, _MAX_INVERSE_T), method="bounded",
                             options={"xatol": 1e-6})
    return float(1.0 / result.x)


def calibration_report(logits, labels, temperature: float) -> dict:
    """ECE of ``logits`` on any split before (T = 1) and after dividing by ``temperature``.

    >>> calibration_report([[4.0, 0.0], [4.0, 0.0]], [0, 1], temperature=1e6)["ece_after"] < 0.01
    True
    """
    logits, labels = _checked(logits, labels)
    return {"ece_before": expected_calibration_error(softmax(logits), labels),
            "ece_after": expected_calibration_error(softmax(logits, temperature), labels),
            "num_samples": int(len(labels))}


def fit_and_save_calibration(logits, labels, model_dir: Path) -> dict:
    """Fit temperature scaling on validation logits and write ``model_dir/calibration.json``.

    Returns what was written (the trainer stores it in ``results.json`` under ``calibration``).
    With no validation sample the temperature stays 1.0 and ``note`` says why.

    >>> fit_and_save_calibration(val_logits, val_labels, run_dir / "final_model")  # doctest: +SKIP
    {'method': 'temperature_scaling', 'temperature': 1.42, 'fitted_on': 'validation',
     'ece_before': 0.081, 'ece_after': 0.023, 'num_samples': 160, 'num_bins': 15}
    """
    logits, labels = _checked(logits, labels)
    calibration = {"method": "temperature_scaling", "temperature": 1.0, "fitted_on": "validation",
                   "ece_before": None, "ece_after": None, "num_samples": int(len(labels)),
                   "num_bins": NUM_BINS}
    if len(labels) == 0:
        calibration["note"] = "no validation samples: temperature left at 1.0"
    else:
        temperature = fit_temperature(logits, labels)
        report = calibration_report(logits, labels, temperature)
        calibration.update(temperature=temperature, ece_before=report["ece_before"],
                           ece_after=report["ece_after"])
    atomic_write_json(Path(model_dir) / CALIBRATION_FILE, calibration)
    return calibration


def load_calibration(model_dir: Path) -> dict | None:
    """The saved calibration of ``model_dir``; None when it has none.

    Raises ValueError when the file exists but holds no positive, finite temperature: a damaged
    file should be noticed, not silently replaced by uncalibrated confidences.
    """
    path = Path(model_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        calibration = json.loads(path.read_text(encoding="utf-8"))
        temperature = float(calibration["temperature"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: unreadable calibration ({error!r})") from None
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"{path}: temperature must be a positive number, got {temperature}")
    calibration["temperature"] = temperature
    return calibration
