"""Two real cross-validation runs compared sentence by sentence in the report's significance test.

Both runs are trained in-process by ``run_cross_validation`` on the same data and seed, so their
folds hold out the same sentences; the report pools each run's out-of-fold test predictions.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from backend.ml.config import ExperimentConfig
from backend.ml.experiments import ExperimentManager, compare_command
from backend.ml.run import run_cross_validation
from support.configs import tiny_config

SENTENCES = 60


def _train_cv(runs_dir, name: str, epochs: int):
    config = ExperimentConfig.from_dict(tiny_config(
        experiment_name=name, training={"epochs": epochs, "learning_rate": 3e-3},
        data={"cv_folds": 2, "max_samples": SENTENCES},
        logging={"tensorboard": False, "log_steps": 50, "save_steps": 0}))
    return run_cross_validation(config, runs_dir)


def _pooled(run_dir) -> pd.DataFrame:
    """Every fold's test predictions of a CV run, read back from the fold directories."""
    frames = [pd.read_csv(path, keep_default_na=False)
              for path in sorted(run_dir.glob("folds/*/predictions/test_predictions.csv"))]
    assert len(frames) == 2
    return pd.concat(frames, ignore_index=True)


@pytest.mark.slow
def test_significance_compares_two_cv_runs_on_their_pooled_out_of_fold_predictions(tmp_path):
    runs_dir = tmp_path / "runs"
    # one epoch leaves the tiny model on the majority class; four make it guess both classes
    strong = _train_cv(runs_dir, "cv_four_epochs", 4)
    weak = _train_cv(runs_dir, "cv_one_epoch", 1)

    first, second = _pooled(strong), _pooled(weak)
    assert len(first) == SENTENCES and first["text"].is_unique  # each sentence tested once
    assert set(first["text"]) == set(second["text"])  # same seed, same folds
    merged = first.merge(second, on="text", suffixes=("_a", "_b"))
    assert (merged["true_label_a"] == merged["true_label_b"]).all()
    right_a = merged["predicted_label_a"] == merged["true_label_a"]
    right_b = merged["predicted_label_b"] == merged["true_label_b"]

    report = tmp_path / "comparison.html"
    compare_command([strong.name, weak.name], runs_dir, report)
    text = report.read_text()
    row = re.search(r'<tr data-run-a="([^"]+)" data-run-b="([^"]+)">(.*?)</tr>', text, re.DOTALL)
    assert row and {row.group(1), row.group(2)} == {strong.name, weak.name}
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(3), re.DOTALL)
    assert "not evaluated on the same test sentences" not in row.group(3)
    assert cells[1] == str(SENTENCES)
    only_a, only_b = (right_a & ~right_b).sum(), (right_b & ~right_a).sum()
    assert only_a + only_b > 0  # the runs disagree on some sentences: the counts say which
    if row.group(1) != strong.name:
        only_a, only_b = only_b, only_a
    assert f"({only_a} vs {only_b} sentences)" in cells[4], cells[4]

    paired = ExperimentManager(runs_dir).paired_test(strong.name, weak.name)
    assert paired["n"] == SENTENCES
    assert paired["mcnemar"]["only_a_correct"] == (right_a & ~right_b).sum()
