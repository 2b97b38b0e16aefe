"""Uncertainty of test metrics: bootstrap confidence intervals and paired significance tests.

A test split of a few hundred sentences gives F1 scores that move by several points from one
sample to the next; these functions say how much, and whether two runs really differ.
All metrics are recomputed from label arrays (class ids), so they match ``classification_metrics``.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ..metrics import label_slug

DEFAULT_METRICS = ("accuracy", "f1_macro", "f1_weighted", "f1_biased")


def _confusions(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrices of many resamples at once: shape (resamples, classes, classes)."""
    labels = np.atleast_2d(labels)
    predictions = np.atleast_2d(predictions)
    resamples = labels.shape[0]
    offsets = (np.arange(resamples) * num_classes * num_classes)[:, None]
    cells = offsets + labels * num_classes + predictions
    counts = np.bincount(cells.ravel(), minlength=resamples * num_classes * num_classes)
    return counts.reshape(resamples, num_classes, num_classes)


def _metrics_from_confusions(confusions: np.ndarray, label_names: list[str],
                             names) -> dict[str, np.ndarray]:
    """accuracy / f1_macro / f1_weighted / f1_<slug> per resample (zero_division=0, as sklearn)."""
    confusions = confusions.astype(np.float64)
    true_positive = np.diagonal(confusions, axis1=1, axis2=2)
    support = confusions.sum(axis=2)
    predicted = confusions.sum(axis=1)
    total = support.sum(axis=1)
    denominator = support + predicted
    f1 = np.divide(2 * true_positive, denominator, out=np.zeros_like(true_positive),
                   where=denominator > 0)
    values = {}
    for name in names:
        if name == "accuracy":
            values[name] = np.divide(true_positive.sum(axis=1), total,
                                     out=np.zeros_like(total), where=total > 0)
        elif name == "f1_macro":
            values[name] = f1.mean(axis=1)
        elif name == "f1_weighted":
            weights = np.divide(support, total[:, None], out=np.zeros_like(support),
                                where=total[:, None] > 0)
            values[name] = (f1 * weights).sum(axis=1)
        elif name.startswith("f1_"):
            slugs = [label_slug(label) for label in label_names]
            slug = name[3:]
            values[name] = f1[:, slugs.index(slug)] if slug in slugs else np.zeros(len(f1))
        else:
            raise ValueError(f"unknown metric {name!r}; use accuracy, f1_macro, f1_weighted or "
                             f"f1_<class>")
    return values


def compute_metrics(labels, predictions, label_names: list[str],
                    metrics=DEFAULT_METRICS) -> dict[str, float]:
    """The point estimates of ``metrics`` for one set of predictions.

    >>> compute_metrics([0, 1, 1], [0, 1, 0], ["Non-biased", "Biased"], ["accuracy"])
    {'accuracy': 0.6666666666666666}
    """
    confusion = _confusions(np.asarray(labels, dtype=int), np.asarray(predictions, dtype=int),
                            len(label_names))
    return {name: float(value[0]) for name, value in
            _metrics_from_confusions(confusion, label_names, metrics).items()}


def bootstrap_confidence_intervals(labels, predictions, label_names: list[str],
                                   metrics=DEFAULT_METRICS, num_resamples: int = 1000,
                                   confidence: float = 0.95, seed: int = 0) -> dict[str, dict]:
    """Percentile bootstrap interval of each metric: resample test sentences with replacement.

    >>> ci = bootstrap_confidence_intervals([0, 1] * 50, [0, 1] * 45 + [1, 0] * 5,
    ...                                     ["Non-biased", "Biased"], ["accuracy"])
    >>> round(ci["accuracy"]["estimate"], 2), ci["accuracy"]["low"] < 0.9 < ci["accuracy"]["high"]
    (0.9, True)
    """
    labels = np.asarray(labels, dtype=int)
    predictions = np.asarray(predictions, dtype=int)
    estimates = compute_metrics(labels, predictions, label_names, metrics)
    if len(labels) == 0:
        return {name: {"estimate": estimates[name], "low": None, "high": None, "n": 0}
                for name in metrics}
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(labels), size=(num_resamples, len(labels)))
    resampled = _metrics_from_confusions(
        _confusions(labels[samples], predictions[samples], len(label_names)), label_names, metrics)
    tail = (1 - confidence) / 2 * 100
    intervals = {}
    for name in metrics:
        low, high = np.percentile(resampled[name], [tail, 100 - tail])
        intervals[name] = {"estimate": estimates[name], "low": float(low), "high": float(high),
                           "n": int(len(labels)), "confidence": confidence}
    return intervals


def paired_bootstrap(labels, predictions_a, predictions_b, label_names: list[str],
                     metric: str = "f1_macro", num_resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> dict:
    """Is ``metric(a) - metric(b)`` real? Resamples the same sentences for both runs.

    Returns the observed difference, its percentile interval and a two-sided p-value
    (twice the share of resampled differences on the other side of zero).
    """
    return recipe_bootstrap(labels, [predictions_a], [predictions_b], label_names, metric,
                            num_resamples, confidence, seed)


def recipe_bootstrap(labels, runs_a, runs_b, label_names: list[str], metric: str = "f1_macro",
                     num_resamples: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> dict:
    """Is one recipe better than another, over its runs at several seeds? A two-level bootstrap.

    ``runs_a`` and ``runs_b`` hold each recipe's predictions of the same sentences, one array a
    run (a seed). Every resample draws the sentences (the same for all runs) and, for each
    recipe, as many of its runs with replacement; the difference is that of the two recipes'
    mean ``metric`` over the drawn runs. So the interval and the two-sided p-value carry both
    the test set's noise and the training's own (how far a rerun at another seed moves), which
    a test between two single runs cannot see. With one run a recipe it is the paired bootstrap.

    >>> labels = np.array([0, 1, 0, 1, 1, 0])
    >>> result = recipe_bootstrap(labels, [labels, labels], [1 - labels, labels], ["a", "b"],
    ...                           "accuracy", num_resamples=200)
    >>> result["difference"], result["runs_a"], result["runs_b"]
    (0.5, 2, 2)
    """
    labels = np.asarray(labels, dtype=int)
    if not len(runs_a) or not len(runs_b):
        raise ValueError("each recipe needs at least one run")
    runs = [np.stack([np.asarray(run, dtype=int) for run in recipe])
            for recipe in (runs_a, runs_b)]
    if any(recipe.shape[1] != len(labels) for recipe in runs):
        raise ValueError("labels and every run's predictions must have the same length")
    observed = [np.mean([compute_metrics(labels, run, label_names, [metric])[metric]
                         for run in recipe]) for recipe in runs]
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(labels), size=(num_resamples, len(labels)))
    resampled_labels = labels[samples]
    num_classes = len(label_names)
    resampled_means = []
    for recipe in runs:
        # values[k, r]: run k's metric on resample r
        values = np.stack([_metrics_from_confusions(
            _confusions(resampled_labels, run[samples], num_classes), label_names,
            [metric])[metric] for run in recipe])
        drawn = rng.integers(0, len(recipe), size=(num_resamples, len(recipe)))
        resampled_means.append(values[drawn, np.arange(num_resamples)[:, None]].mean(axis=1))
    differences = resampled_means[0] - resampled_means[1]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    if np.all(differences == 0):
        p_value = 1.0
    else:
        p_value = float(min(1.0, 2 * min(np.mean(differences <= 0), np.mean(differences >= 0))))
    return {"test": "paired bootstrap" if len(runs[0]) == len(runs[1]) == 1
            else "two-level bootstrap (sentences and runs)", "metric": metric,
            "difference": float(observed[0] - observed[1]),
            "low": float(low), "high": float(high), "p_value": p_value,
            "num_resamples": num_resamples, "n": int(len(labels)),
            "runs_a": len(runs[0]), "runs_b": len(runs[1])}


def mcnemar_test(labels, predictions_a, predictions_b) -> dict:
    """McNemar's test on the sentences exactly one of the two runs gets right.

    Exact binomial test when fewer than 25 sentences disagree, else chi-square with
    continuity correction.

    >>> mcnemar_test([0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1])["p_value"]
    1.0
    """
    labels = np.asarray(labels, dtype=int)
    correct_a = np.asarray(predictions_a, dtype=int) == labels
    correct_b = np.asarray(predictions_b, dtype=int) == labels
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    discordant = only_a + only_b
    if discordant == 0:
        statistic, p_value, method = 0.0, 1.0, "exact"
    elif discordant < 25:
        statistic = float(min(only_a, only_b))
        p_value = float(stats.binomtest(only_a, discordant, 0.5).pvalue)
        method = "exact"
    else:
        statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
        p_value = float(stats.chi2.sf(statistic, df=1))
        method = "chi-square"
    return {"test": "McNemar", "method": method, "only_a_correct": only_a,
            "only_b_correct": only_b, "statistic": float(statistic), "p_value": min(1.0, p_value),
            "n": int(len(labels))}
