"""Input and output drift against a run's training data: PSI, length and vocabulary shift.

The population-stability index compares two distributions over the same bins:
``sum((served - training) * ln(served / training))``; by the usual reading, below 0.1 is
stable, 0.1 to 0.25 a moderate shift and above 0.25 a shift worth acting on.

>>> round(population_stability_index([1, 2, 3, 4] * 25, [1, 2, 3, 4] * 25), 6)
0.0
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

PSI_FLOOR = 1e-4  # an empty bin would make the index infinite
PSI_MODERATE, PSI_MAJOR = 0.1, 0.25
_WORD = re.compile(r"[a-z0-9']+")


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    expected = np.maximum(expected / max(expected.sum(), 1), PSI_FLOOR)
    actual = np.maximum(actual / max(actual.sum(), 1), PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def population_stability_index(training, served, bins: int = 10) -> float:
    """PSI of a numeric feature, over bins at the training data's quantiles."""
    training = np.asarray(training, dtype=float)
    served = np.asarray(served, dtype=float)
    edges = np.unique(np.quantile(training, np.linspace(0, 1, bins + 1)[1:-1]))
    expected = np.bincount(np.searchsorted(edges, training, side="right"),
                           minlength=len(edges) + 1)
    actual = np.bincount(np.searchsorted(edges, served, side="right"), minlength=len(edges) + 1)
    return _psi(expected.astype(float), actual.astype(float))


def categorical_psi(training: list[str], served: list[str], categories: list[str]) -> float:
    """PSI of a categorical feature such as the predicted label.

    >>> categorical_psi(["a", "b"] * 50, ["a"] * 100, ["a", "b"]) > 0.25
    True
    """
    expected = np.array([training.count(name) for name in categories], dtype=float)
    actual = np.array([served.count(name) for name in categories], dtype=float)
    return _psi(expected, actual)


def shares_psi(expected: dict[str, float], actual: dict[str, float]) -> float:
    """PSI of two categorical distributions given as shares (or counts) per category.

    >>> round(shares_psi({"en": 0.5, "de": 0.5}, {"en": 1, "de": 1}), 6)
    0.0
    """
    categories = sorted(set(expected) | set(actual))
    return _psi(np.array([expected.get(name, 0.0) for name in categories], dtype=float),
                np.array([actual.get(name, 0.0) for name in categories], dtype=float))


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def vocabulary_shift(training_texts: list[str], served_texts: list[str]) -> dict:
    """Out-of-vocabulary rate of served words and the Jensen-Shannon distance of word frequencies.

    >>> vocabulary_shift(["the cat sat"], ["the dog sat"])["oov_rate"]
    0.3333333333333333
    """
    training = Counter(word for text in training_texts for word in words(text))
    served = Counter(word for text in served_texts for word in words(text))
    total = sum(served.values())
    if not total or not training:
        return {"oov_rate": None, "js_distance": None, "served_words": total}
    oov = sum(count for word, count in served.items() if word not in training) / total
    vocabulary = sorted(set(training) | set(served))
    p = np.array([training[word] for word in vocabulary], dtype=float)
    q = np.array([served[word] for word in vocabulary], dtype=float)
    from scipy.spatial.distance import jensenshannon

    return {"oov_rate": oov, "js_distance": float(jensenshannon(p / p.sum(), q / q.sum(), 2)),
            "served_words": total}


def psi_reading(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value < PSI_MODERATE:
        return "stable"
    return "moderate shift" if value < PSI_MAJOR else "major shift"
