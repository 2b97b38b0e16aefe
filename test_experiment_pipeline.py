#!/usr/bin/env python
"""Check an install end to end, as a new user would, in about a minute on a laptop CPU.

    python test_experiment_pipeline.py

Trains the quick start (the pip-shipped MiniLM on the shipped demo data, no network) through the
command line into a temporary directory, checks that it beats the majority-class baseline,
classifies new sentences with ``BiasClassifier`` from that run, and writes the comparison
report. Nothing is written into the project. pytest collects the same check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent
QUICKSTART = PROJECT / "experiments" / "configs" / "quickstart.yaml"
SENTENCES = ["The senator's reckless scheme will ruin every family in the state.",
             "The committee met on Tuesday to discuss the budget."]


def _cli(*args: str, cwd: Path) -> str:
    """Run ``run_experiment.py`` as a user does; its output, or an error with what it said."""
    environment = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline",
                       TOKENIZERS_PARALLELISM="false")
    completed = subprocess.run([sys.executable, str(PROJECT / "run_experiment.py"), *args],
                               cwd=cwd, env=environment, capture_output=True, text=True)
    if completed.returncode != 0:
        raise AssertionError(f"run_experiment.py {' '.join(args)} exited "
                             f"{completed.returncode}:\n{completed.stderr[-3000:]}")
    return completed.stdout


def _majority_baseline(label_counts: dict[str, int]) -> tuple[float, float]:
    """(accuracy, macro F1) of always answering the most frequent test label."""
    share = max(label_counts.values()) / sum(label_counts.values())
    return share, 2 * share / (1 + share) / len(label_counts)


def check_install(workdir: Path, say=print) -> dict:
    """Every step of the check, each announced through ``say``; returns the run's test metrics."""
    from backend.ml.bias_classifier import BiasClassifier
    from backend.ml.run_directory import read_results

    started = time.perf_counter()
    say("1/4 the command line answers and the quick-start config is valid")
    assert "usage:" in _cli("--help", cwd=workdir)
    assert "valid" in _cli(str(QUICKSTART), "--dry-run", cwd=workdir)

    say("2/4 training the quick start (MiniLM-L6 on the demo data)")
    runs = workdir / "runs"
    assert "Summary of quickstart_minilm_" in _cli(str(QUICKSTART), "--output-dir", str(runs),
                                                   cwd=workdir)
    (run_dir,) = [path for path in runs.iterdir() if path.is_dir()]
    results = read_results(run_dir)
    assert results["status"] == "completed" and results["model"]["num_layers"] == 6
    accuracy, macro_f1 = _majority_baseline(results["data"]["splits"]["test"]["label_counts"])
    test = results["test"]
    say(f"    test macro-F1 {test['f1_macro']:.3f} (majority baseline {macro_f1:.3f}), "
        f"accuracy {test['accuracy']:.3f} (baseline {accuracy:.3f})")
    assert test["f1_macro"] > macro_f1 + 0.3 and test["accuracy"] > accuracy + 0.2

    say("3/4 classifying new sentences with BiasClassifier")
    classifier = BiasClassifier()
    classifier.load_model(str(run_dir / "final_model"))
    predictions = classifier.predict_with_confidence(SENTENCES)
    for sentence, prediction in zip(SENTENCES, predictions):
        assert prediction["label"] in results["data"]["label_names"]
        say(f"    {prediction['label']:>12} ({prediction['confidence']:.2f})  {sentence}")

    say("4/4 writing the comparison report")
    report = workdir / "comparison.html"
    _cli("compare", "--runs-dir", str(runs), "--report", str(report), cwd=workdir)
    assert run_dir.name in report.read_text(encoding="utf-8")
    say(f"The install works ({time.perf_counter() - started:.0f} s).")
    return test


def test_the_install_trains_evaluates_predicts_and_reports(tmp_path):
    """The same check under pytest: each step asserts what it shows the user."""
    check_install(tmp_path, say=lambda _message: None)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="bias-install-check-") as directory:
        try:
            check_install(Path(directory))
        except AssertionError as failure:
            print(f"\nThe install check failed: {failure}", file=sys.stderr)
            sys.exit(1)
