"""Does a candidate beat production on production's own held-out test sentences?

Both models classify exactly the sentences of the production run's test split
(``predictions/test_predictions.csv``); the difference is judged with the paired bootstrap and
McNemar's test that the comparison report uses. A candidate qualifies only if it cannot have
trained on those sentences: its own test split is the same one (same data, same seed), or it
was built by ``retrain``, which holds them out (``retrain.json`` names the production run).

>>> result = compare_with_production(Path("runs/tiny_retrain_ab12cd"),
...                                  Path("runs/tiny_3f9a1c"))  # doctest: +SKIP
>>> result["bootstrap"]["difference"], result["bootstrap"]["p_value"]  # doctest: +SKIP
(0.031, 0.21)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..experiments.predictions import load_predictions
from ..experiments.rundir import RunInfo
from ..experiments.statistics import compute_metrics, mcnemar_test, paired_bootstrap
from ..model_registry import RegistryError
from ..run_directory import RunLayout


def production_test_set(production_dir: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(texts, class ids, label names) of the production run's held-out test split."""
    predictions, reason = load_predictions(RunInfo.read(production_dir))
    if predictions is None:
        raise RegistryError(f"{production_dir.name}: no test set to compare on ({reason})")
    return (predictions.frame["text"].tolist(), predictions.labels,
            list(predictions.label_names))


def _held_out_reason(candidate_dir: Path, production_dir: Path,
                     test_texts: list[str]) -> str | None:
    """None when the candidate never trained on production's test sentences, else why not."""
    retrain_file = RunLayout(candidate_dir).retrain_record
    if retrain_file.is_file():
        record = json.loads(retrain_file.read_text(encoding="utf-8"))
        if record.get("held_out_test_of") == production_dir.name:
            return None
        return (f"{candidate_dir.name} was retrained holding out the test split of "
                f"{record.get('held_out_test_of')}, not of {production_dir.name}")
    own, _ = load_predictions(RunInfo.read(candidate_dir))
    if own is not None and sorted(own.frame["text"].tolist()) == sorted(test_texts):
        return None
    return (f"{candidate_dir.name} was tested on other sentences than {production_dir.name}, so "
            "it may have trained on production's test split; train it with the same data and "
            "seed, or build it with `retrain`")


def _predicted_ids(run_dir: Path, texts: list[str], label_names: list[str]) -> np.ndarray:
    from ..inference import BiasClassifier

    classifier = BiasClassifier().load_model(RunLayout(run_dir).final_model)
    if classifier.label_names != label_names:
        raise RegistryError(f"{run_dir.name} predicts {classifier.label_names}, production "
                            f"{label_names}: the two models answer different questions")
    return classifier.predict_proba(texts).argmax(axis=1)


def compare_with_production(candidate_dir: Path, production_dir: Path, metric: str = "f1_macro",
                            alpha: float = 0.05, seed: int = 0) -> dict:
    """Metrics of both models on production's test split and the paired tests of the difference.

    ``candidate_better`` is true when the candidate's ``metric`` is higher and the paired
    bootstrap's p-value is below ``alpha``.
    """
    candidate_dir, production_dir = Path(candidate_dir), Path(production_dir)
    texts, labels, label_names = production_test_set(production_dir)
    reason = _held_out_reason(candidate_dir, production_dir, texts)
    if reason:
        raise RegistryError(f"cannot compare on the same held-out test set: {reason}")
    candidate = _predicted_ids(candidate_dir, texts, label_names)
    production = _predicted_ids(production_dir, texts, label_names)
    bootstrap = paired_bootstrap(labels, candidate, production, label_names, metric, seed=seed)
    return {
        "metric": metric, "alpha": alpha, "n": len(texts),
        "test_set": f"test split of {production_dir.name}",
        "candidate_run": candidate_dir.name, "production_run": production_dir.name,
        "candidate": compute_metrics(labels, candidate, label_names),
        "production": compute_metrics(labels, production, label_names),
        "bootstrap": bootstrap,
        "mcnemar": mcnemar_test(labels, candidate, production),
        "candidate_better": bool(bootstrap["difference"] > 0 and bootstrap["p_value"] < alpha),
    }


def describe_comparison(result: dict) -> str:
    """Two lines a person reads before promoting."""
    boot = result["bootstrap"]
    metric = result["metric"]
    verdict = ("beats production" if result["candidate_better"] else
               "does not beat production significantly")
    return (f"On the {result['test_set']} ({result['n']} sentences): {metric} candidate "
            f"{result['candidate'][metric]:.4f} vs production {result['production'][metric]:.4f} "
            f"(difference {boot['difference']:+.4f}, 95% CI [{boot['low']:+.4f}, "
            f"{boot['high']:+.4f}], paired bootstrap p={boot['p_value']:.3f}; McNemar "
            f"p={result['mcnemar']['p_value']:.3f}).\nThe candidate {verdict} "
            f"(alpha {result['alpha']}).")
