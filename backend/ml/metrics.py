"""Classification metrics shared by training, comparison and inference (scikit-learn based)."""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

import numpy as np
import scipy.special
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

BIASED = "Biased"


def label_slug(label: str) -> str:
    """Metric-name form of a label.

    'Non-biased' -> 'non_biased', 'No agreement' -> 'no_agreement'.
    """
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def classification_metrics(labels, predictions, label_names: list[str]) -> dict[str, Any]:
    """Accuracy, F1 (macro, weighted, binary for Biased), per-class scores and the confusion matrix.

    Flat keys (``accuracy``, ``f1_macro``, ``f1_biased``, ``f1_non_biased``, ...) are what trackers
    log; ``per_class`` and ``confusion_matrix`` (rows: true label, columns: predicted, in
    ``label_names`` order) are what reports draw.

    >>> classification_metrics([0, 1, 1], [0, 1, 0], ["Non-biased", "Biased"])["accuracy"]
    0.6666666666666666
    """
    labels = np.asarray(labels, dtype=int)
    predictions = np.asarray(predictions, dtype=int)
    class_ids = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=class_ids, zero_division=0)
    metrics: dict[str, Any] = {
        "accuracy": float(accuracy_score(labels, predictions)) if len(labels) else 0.0,
        "f1_macro": float(f1_score(labels, predictions, labels=class_ids, average="macro",
                                   zero_division=0)),
        "f1_weighted": float(f1_score(labels, predictions, labels=class_ids, average="weighted",
                                      zero_division=0)),
    }
    per_class = {}
    for class_id, name in enumerate(label_names):
        per_class[name] = {"precision": float(precision[class_id]),
                           "recall": float(recall[class_id]),
                           "f1": float(f1[class_id]), "support": int(support[class_id])}
        metrics[f"f1_{label_slug(name)}"] = float(f1[class_id])
    # f1_biased is the binary F1 of the Biased class, present whatever the label set.
    metrics.setdefault("f1_biased", 0.0)
    metrics["per_class"] = per_class
    metrics["confusion_matrix"] = confusion_matrix(labels, predictions, labels=class_ids).tolist()
    metrics["label_names"] = list(label_names)
    return metrics


def is_number(value, finite: bool = False) -> bool:
    """A plain real number (bools excluded); with ``finite``, neither NaN nor infinite.

    >>> is_number(0.5), is_number(True), is_number(float("nan"), finite=True)
    (True, False, False)
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    return math.isfinite(value) if finite else True


def numeric_items(metrics: dict) -> dict[str, float]:
    """The entries of ``metrics`` that are plain numbers, as floats (what scalar trackers log)."""
    return {key: float(value) for key, value in metrics.items() if is_number(value)}


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (scipy's, numerically stable), in float64.

    >>> softmax(np.array([[0.0, 0.0]])).tolist()
    [[0.5, 0.5]]
    """
    return scipy.special.softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1)


class EvaluationResult:
    """Everything one evaluation pass produced: what trackers, plots and reports draw from.

    ``split`` is the metric prefix (``eval`` or ``test``); ``metrics`` is the output of
    :func:`classification_metrics` plus ``loss``; arrays are in dataset order.
    """

    def __init__(self, split: str, label_names: list[str], labels: np.ndarray,
                 logits: np.ndarray, texts: list[str], metadata: list[dict], loss: float,
                 seconds: float = 0.0):
        self.split = split
        self.label_names = list(label_names)
        self.labels = np.asarray(labels, dtype=int)
        self.logits = np.asarray(logits, dtype=np.float32)
        self.probabilities = softmax(self.logits)
        self.predictions = self.probabilities.argmax(axis=-1)
        self.texts = list(texts)
        self.metadata = list(metadata)
        self.seconds = seconds
        self.metrics = classification_metrics(self.labels, self.predictions, self.label_names)
        self.metrics["loss"] = float(loss)

    def prefixed_scalars(self) -> dict[str, float]:
        """``{"eval/accuracy": ..., "eval/f1_macro": ..., "eval/loss": ...}``."""
        return {f"{self.split}/{key}": value for key, value in numeric_items(self.metrics).items()}

    def samples(self, limit: int) -> list[dict]:
        """Up to ``limit`` prediction samples: misclassified, then correct; most confident first."""
        confidence = self.probabilities.max(axis=-1)
        wrong = self.predictions != self.labels
        order = sorted(range(len(self.labels)), key=lambda i: (not wrong[i], -confidence[i]))
        return [{"text": self.texts[i], "true_label": self.label_names[self.labels[i]],
                 "predicted_label": self.label_names[self.predictions[i]],
                 "confidence": float(confidence[i]), "correct": bool(not wrong[i])}
                for i in order[:limit]]
