"""Experiment management on synthetic run directories: manager, comparison, statistics, report.

The run directories are written by the trainer's own writers (config.yaml, results.json,
metrics.jsonl, predictions CSVs) with synthetic but self-consistent predictions, so every
number the tools show can be checked against an independent computation.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from backend.ml.config import ExperimentConfig
from backend.ml.config.loading import config_from_dict
from backend.ml.errors import UserError
from backend.ml.experiment_config import ExperimentManager
from backend.ml.experiments import (
    aggregate_cross_validation,
    compare_command,
    format_comparison_table,
)
from backend.ml.experiments.statistics import (
    bootstrap_confidence_intervals,
    compute_metrics,
    mcnemar_test,
    paired_bootstrap,
    recipe_bootstrap,
)
from backend.ml.fileio import atomic_write_text
from backend.ml.metrics import EvaluationResult
from backend.ml.run_directory import (
    SCHEMA_VERSION,
    RunLayout,
    create_run_directory,
    read_results,
    write_predictions,
    write_results,
)
from support.browser import CHROMIUM

LABELS = ["Non-biased", "Biased", "No agreement"]
OUTLETS = {"left": ["msnbc", "alternet"], "center": ["reuters", "usa-today"],
           "right": ["breitbart", "fox-news"]}
TOPICS = ["immigration", "gun-control", "climate-change", "abortion"]
REPO = Path(__file__).resolve().parent.parent


# ---- building run directories ----------------------------------------------------------

def _test_sentences(count: int, seed: int, num_classes: int = 3) -> list[dict]:
    rng = np.random.default_rng(seed)
    shares = [0.45, 0.45, 0.10][:num_classes]
    leanings = list(OUTLETS)
    sentences = []
    for index in range(count):
        leaning = leanings[index % 3]
        sentences.append({
            "index": index, "text": f"Sentence {seed}-{index} about {TOPICS[index % 4]}.",
            "true_id": int(rng.choice(num_classes, p=np.array(shares) / sum(shares))),
            "outlet": OUTLETS[leaning][index % 2], "topic": TOPICS[index % 4],
            "type": leaning if index % 10 else "",  # some rows without a leaning, as in SG2
            "news_link": f"https://example.org/{index}", "source_row": index + 2})
    return sentences


def _predict(sentences, accuracy, accuracy_by_type, seed, num_classes: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    predictions = []
    for sentence in sentences:
        chance = accuracy_by_type.get(sentence["type"], accuracy)
        if rng.random() < chance:
            predictions.append(sentence["true_id"])
        else:
            predictions.append(int(rng.choice([c for c in range(num_classes)
                                               if c != sentence["true_id"]])))
    return np.array(predictions)


def make_run(runs_dir: Path, run_id: str, *, accuracy: float = 0.75, seed: int = 1,
             status: str = "completed", tags=("synthetic",), config: dict | None = None,
             accuracy_by_type: dict | None = None, test_seed: int = 7, test_size: int = 150,
             eval_loss: float | None = None, started_at: str = "2026-01-01T10:00:00+00:00",
             error: str | None = None, labels: list[str] = LABELS,
             results_data: dict | None = None) -> Path:
    """A run directory as the trainer writes it, with consistent predictions and metrics.

    ``config`` sets dotted fields (``{"data.dataset": "babe"}``); ``results_data`` is merged
    into results.json's ``data`` section.
    """
    name = run_id.rsplit("_", 1)[0]
    run_dir = create_run_directory(runs_dir, name, run_id=run_id)
    layout = RunLayout(run_dir)
    data = ExperimentConfig(experiment_name=name, tags=list(tags)).to_dict()
    for dotted, value in (config or {}).items():
        if "." in dotted:
            section, field = dotted.split(".")
            data[section][field] = value
        else:
            data[dotted] = value
    # Unvalidated: some tests name runs the way only a hostile hand would.
    config_from_dict(data, validate=False).save_yaml(layout.config)

    classes = len(labels)
    sentences = _test_sentences(test_size, test_seed, classes)
    truth = np.array([sentence["true_id"] for sentence in sentences])
    predicted = _predict(sentences, accuracy, accuracy_by_type or {}, seed, classes)
    shares = np.array([0.45, 0.45, 0.1][:classes])
    eval_truth = np.random.default_rng(seed + 100).choice(classes, size=80, p=shares / shares.sum())
    eval_predicted = _predict([{"true_id": int(t), "type": ""} for t in eval_truth], accuracy, {},
                              seed + 200, classes)
    metadata_columns = ("outlet", "topic", "type", "news_link", "source_row")
    test = EvaluationResult(
        "test", labels, truth, _logits(predicted, classes, np.random.default_rng(seed + 300)),
        [sentence["text"] for sentence in sentences],
        [{column: sentence[column] for column in metadata_columns} for sentence in sentences],
        loss=1.0 - accuracy)
    evaluation = EvaluationResult(
        "eval", labels, eval_truth,
        _logits(eval_predicted, classes, np.random.default_rng(seed + 400)),
        [f"Validation sentence {seed}-{index}." for index in range(len(eval_truth))],
        [{}] * len(eval_truth), loss=eval_loss if eval_loss is not None else 1.1 - accuracy)
    write_predictions(layout.test_predictions, test)
    write_predictions(layout.eval_predictions, evaluation)

    records = []
    for step in range(10, 61, 10):
        records.append({"step": step, "epoch": step / 20,
                        "train/loss": 1.2 - accuracy * step / 80})
        if step % 20 == 0:
            records.append({"step": step, "epoch": step / 20,
                            "eval/loss": 1.3 - accuracy * step / 60,
                            "eval/f1_macro": evaluation.metrics["f1_macro"] * step / 60})
    records.append({"step": 60, **{f"test/{key}": value for key, value in test.metrics.items()
                                   if isinstance(value, float)}})
    atomic_write_text(layout.metrics, "".join(json.dumps(record) + "\n" for record in records))
    results = {
        "schema_version": SCHEMA_VERSION, "experiment_id": run_id, "experiment_name": name,
        "description": "synthetic", "tags": list(tags), "status": status, "error": error,
        "metadata": {"started_at": started_at, "finished_at": started_at, "device": "cpu"},
        "model": {"architecture": data["model"]["architecture"]},
        "data": {"dataset": data["data"]["dataset"], "label_names": list(labels),
                 **(results_data or {})},
        "training": {"total_steps": 60, "best_metric": "eval/f1_macro"},
        "timing": {"total_seconds": 12.5},
    }
    if status == "completed":
        results["eval"], results["test"] = evaluation.metrics, test.metrics
    write_results(run_dir, results)
    return run_dir


def _logits(predicted: np.ndarray, classes: int, rng: np.random.Generator) -> np.ndarray:
    """Logits whose softmax puts the most probability on ``predicted``, the rest at random."""
    probabilities = rng.dirichlet(np.ones(classes), size=len(predicted))
    probabilities[np.arange(len(predicted)), predicted] += 1.0
    return np.log(probabilities / probabilities.sum(axis=1, keepdims=True))


def make_cv_run(runs_dir: Path, run_id: str, folds: int = 3, accuracy: float = 0.7,
                **run_options) -> Path:
    """A CV parent whose folds each test on a disjoint part of the same sentences.

    ``run_options`` go to every fold's :func:`make_run` (``config``, ``labels``, ...).
    """
    parent = runs_dir / run_id
    fold_results = []
    for fold in range(1, folds + 1):
        fold_dir = make_run(parent / "folds", f"fold-{fold}", accuracy=accuracy, seed=fold,
                            test_seed=50 + fold, test_size=60, **run_options)
        fold_results.append(read_results(fold_dir))
    summary = aggregate_cross_validation(fold_results)
    results = dict(fold_results[0], experiment_id=run_id, experiment_name=run_id.rsplit("_", 1)[0],
                   cross_validation=summary)
    results["test"] = {key.split("/", 1)[1]: value for key, value in summary["mean"].items()
                       if key.startswith("test/")}
    results["eval"] = {key.split("/", 1)[1]: value for key, value in summary["mean"].items()
                       if key.startswith("eval/")}
    write_results(parent, results)
    shutil.copy(parent / "folds" / "fold-1" / "config.yaml", parent / "config.yaml")
    return parent


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    """Three completed runs (good, medium, weak on left-leaning outlets) and broken ones."""
    runs = tmp_path / "experiments" / "runs"
    make_run(runs, "bert_baseline_v1_abc123", accuracy=0.85, seed=1, tags=("baseline",),
             config={"training.learning_rate": 2e-5}, started_at="2026-01-01T10:00:00+00:00")
    make_run(runs, "distilbert_fast_v1_def456", accuracy=0.60, seed=2,
             config={"training.learning_rate": 5e-5, "model.architecture": "distilbert"},
             started_at="2026-01-02T10:00:00+00:00")
    make_run(runs, "roberta_left_v1_aaa111", accuracy=0.80, seed=3,
             accuracy_by_type={"left": 0.35}, started_at="2026-01-03T10:00:00+00:00")
    make_run(runs, "crashed_v1_bbb222", status="failed", error="CUDA out of memory",
             started_at="2026-01-04T10:00:00+00:00")
    make_run(runs, "stopped_v1_ccc333", status="interrupted", started_at="2026-01-05T10:00:00")
    (runs / "empty_v1_ddd444").mkdir()
    broken = make_run(runs, "broken_v1_eee555")
    (broken / "results.json").write_text('{"status": "completed", "test": {')  # torn write
    return runs


# ---- manager ---------------------------------------------------------------------------

def test_list_runs_reports_every_run_with_its_status_and_never_crashes(runs_dir):
    runs = {run.run_id: run for run in ExperimentManager(runs_dir).list_runs()}
    assert {run_id: run.status for run_id, run in runs.items()} == {
        "bert_baseline_v1_abc123": "completed", "distilbert_fast_v1_def456": "completed",
        "roberta_left_v1_aaa111": "completed", "crashed_v1_bbb222": "failed",
        "stopped_v1_ccc333": "interrupted", "empty_v1_ddd444": "incomplete",
        "broken_v1_eee555": "corrupt"}
    assert runs["crashed_v1_bbb222"].reason == "CUDA out of memory"
    assert "results.json is missing" in runs["empty_v1_ddd444"].reason
    assert "cannot be read" in runs["broken_v1_eee555"].reason


def test_list_runs_filters_by_tag_name_and_status(runs_dir):
    manager = ExperimentManager(runs_dir)
    assert [run.run_id for run in manager.list_runs(tag="baseline")] == ["bert_baseline_v1_abc123"]
    assert [run.run_id for run in manager.list_runs(name="distilbert")] == [
        "distilbert_fast_v1_def456"]
    assert [run.run_id for run in manager.list_runs(name="*_v1_a*")] == [
        "bert_baseline_v1_abc123", "roberta_left_v1_aaa111"]
    assert {run.run_id for run in manager.list_runs(status=["failed", "corrupt"])} == {
        "crashed_v1_bbb222", "broken_v1_eee555"}
    assert ExperimentManager(runs_dir / "missing").list_runs() == []


def test_load_run_gives_config_results_and_paths(runs_dir):
    run = ExperimentManager(runs_dir).load_run("bert_baseline_v1_abc123")
    assert run.config["training"]["learning_rate"] == 2e-5
    assert run.results["test"]["f1_macro"] == run.metric("test/f1_macro")
    assert run.paths["test_predictions"].is_file()
    assert ExperimentManager(runs_dir).load_run("distilbert_fast").run_id == \
        "distilbert_fast_v1_def456"  # a unique prefix is enough


def test_unknown_run_names_it_and_suggests_close_ids(runs_dir):
    with pytest.raises(UserError) as raised:
        ExperimentManager(runs_dir).load_run("bert_baseline_v1_abc124")
    message = str(raised.value)
    assert "'bert_baseline_v1_abc124'" in message and "bert_baseline_v1_abc123" in message


def test_get_best_run_uses_completed_runs_and_the_metric_direction(runs_dir):
    manager = ExperimentManager(runs_dir)
    completed = manager.list_runs(status="completed")
    best = manager.load_run(manager.get_best_run("eval/f1_macro"))
    assert best.metric("eval/f1_macro") == max(run.metric("eval/f1_macro") for run in completed)
    lowest_loss = manager.load_run(manager.get_best_run("eval/loss"))
    assert lowest_loss.metric("eval/loss") == min(run.metric("eval/loss") for run in completed)
    assert manager.get_best_run("test/f1_macro") == "bert_baseline_v1_abc123"
    with pytest.raises(UserError, match="did you mean 'eval/f1_macro'"):
        manager.get_best_run("eval/f1_macro_")


def test_compare_runs_gives_metrics_config_differences_and_per_class(runs_dir):
    manager = ExperimentManager(runs_dir, num_resamples=300)
    comparison = manager.compare_runs(["bert_baseline_v1_abc123", "distilbert_fast_v1_def456"])
    for run_id, f1 in comparison["summary"]["f1_macro"].items():
        assert f1 == manager.load_run(run_id).results["test"]["f1_macro"]
    assert comparison["summary"]["eval/f1_macro"]["bert_baseline_v1_abc123"] == \
        manager.load_run("bert_baseline_v1_abc123").results["eval"]["f1_macro"]
    assert comparison["config_differences"] == {
        "model.architecture": {"bert_baseline_v1_abc123": "bert",
                               "distilbert_fast_v1_def456": "distilbert"},
        "tags": {"bert_baseline_v1_abc123": ["baseline"],
                 "distilbert_fast_v1_def456": ["synthetic"]},
        "training.learning_rate": {"bert_baseline_v1_abc123": 2e-5,
                                   "distilbert_fast_v1_def456": 5e-5}}
    per_class = comparison["per_class"]["bert_baseline_v1_abc123"]
    assert set(per_class) == set(LABELS) and sum(c["support"] for c in per_class.values()) == 150
    assert comparison["best"]["f1_macro"] == "bert_baseline_v1_abc123"
    interval = comparison["confidence_intervals"]["bert_baseline_v1_abc123"]["f1_macro"]
    assert interval["low"] < interval["estimate"] < interval["high"]
    assert interval["estimate"] == pytest.approx(comparison["summary"]["f1_macro"][
        "bert_baseline_v1_abc123"])
    (significance,) = comparison["significance"]
    assert significance["run_a"] == "bert_baseline_v1_abc123" and significance["significant"]


# ---- statistics ------------------------------------------------------------------------

def test_metrics_recomputed_for_resamples_match_scikit_learn():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    ours = compute_metrics(labels, predictions, LABELS, ["f1_macro", "f1_weighted", "f1_biased"])
    assert ours["f1_macro"] == pytest.approx(f1_score(labels, predictions, average="macro"))
    assert ours["f1_weighted"] == pytest.approx(f1_score(labels, predictions,
                                                         average="weighted"))
    assert ours["f1_biased"] == pytest.approx(f1_score(labels == 1, predictions == 1))


def test_bootstrap_interval_narrows_with_more_test_sentences():
    rng = np.random.default_rng(1)

    def width(size):
        labels = rng.integers(0, 2, size)
        predictions = np.where(rng.random(size) < 0.8, labels, 1 - labels)
        ci = bootstrap_confidence_intervals(labels, predictions, LABELS[:2], ["accuracy"],
                                            num_resamples=500)["accuracy"]
        assert ci["low"] <= ci["estimate"] <= ci["high"]
        return ci["high"] - ci["low"]

    small, large = width(100), width(2500)
    assert 0.1 < small < 0.2  # about 4 standard errors of sqrt(.16/100) = .04
    assert large < small / 3


def test_paired_tests_separate_real_differences_from_noise():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 400)
    strong = np.where(rng.random(400) < 0.9, labels, 1 - labels)
    weak = np.where(rng.random(400) < 0.7, labels, 1 - labels)
    real = paired_bootstrap(labels, strong, weak, LABELS[:2], "f1_macro", num_resamples=500)
    assert real["difference"] > 0.1 and real["low"] > 0 and real["p_value"] < 0.01
    assert mcnemar_test(labels, strong, weak)["p_value"] < 0.001
    same = paired_bootstrap(labels, strong, strong, LABELS[:2], "f1_macro", num_resamples=200)
    assert same["difference"] == 0 and same["p_value"] == 1.0
    nearly = strong.copy()
    nearly[:3] = 1 - nearly[:3]
    assert mcnemar_test(labels, strong, nearly)["p_value"] > 0.2


def _run_with_accuracy(labels, accuracy, rng):
    return np.where(rng.random(len(labels)) < accuracy, labels, 1 - labels)


def test_comparing_recipes_over_their_seeds_counts_how_far_a_rerun_moves():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 800)
    # Recipe a trains unevenly (its seeds land at 0.70 to 0.90), recipe b evenly near 0.80.
    uneven = [_run_with_accuracy(labels, accuracy, rng) for accuracy in (0.90, 0.70, 0.86)]
    even = [_run_with_accuracy(labels, accuracy, rng) for accuracy in (0.80, 0.80, 0.80)]
    # Its luckiest seed against one of b's: the single runs differ "significantly"...
    single = paired_bootstrap(labels, uneven[0], even[0], LABELS[:2], "accuracy",
                              num_resamples=1000)
    assert single["p_value"] < 0.01
    # ...the recipes do not: drawing the runs too shows a's seed-to-seed spread.
    recipes = recipe_bootstrap(labels, uneven, even, LABELS[:2], "accuracy", num_resamples=1000)
    means = [np.mean([np.mean(run == labels) for run in recipe]) for recipe in (uneven, even)]
    assert recipes["difference"] == pytest.approx(means[0] - means[1])
    assert recipes["runs_a"] == recipes["runs_b"] == 3
    assert recipes["p_value"] > 0.2 and recipes["low"] < 0 < recipes["high"]
    # A recipe better at every seed stays significant.
    strong = [_run_with_accuracy(labels, accuracy, rng) for accuracy in (0.90, 0.91, 0.89)]
    better = recipe_bootstrap(labels, strong, even, LABELS[:2], "accuracy", num_resamples=1000)
    assert better["p_value"] < 0.01 and better["low"] > 0


def test_mcnemar_exact_matches_the_binomial_distribution():
    labels = np.zeros(20, dtype=int)
    first = np.zeros(20, dtype=int)
    second = np.array([1] * 8 + [0] * 12)  # the second run gets 8 sentences wrong
    result = mcnemar_test(labels, first, second)
    assert result["method"] == "exact" and result["only_a_correct"] == 8
    assert result["p_value"] == pytest.approx(2 * 0.5 ** 8)


def test_paired_test_refuses_runs_with_different_test_sentences(runs_dir):
    make_run(runs_dir, "other_split_v1_fff666", test_seed=99)
    manager = ExperimentManager(runs_dir)
    with pytest.raises(UserError, match="not evaluated on the same test sentences"):
        manager.paired_test("bert_baseline_v1_abc123", "other_split_v1_fff666")
    comparison = manager.compare_runs(["bert_baseline_v1_abc123", "other_split_v1_fff666"])
    assert "same test sentences" in comparison["significance"][0]["error"]


def test_paired_test_matches_sentences_by_text_not_row_order(runs_dir):
    manager = ExperimentManager(runs_dir)
    path = manager.load_run("distilbert_fast_v1_def456").paths["test_predictions"]
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0]] + lines[:0:-1]) + "\n")  # rows reversed
    result = manager.paired_test("bert_baseline_v1_abc123", "distilbert_fast_v1_def456")
    assert result["n"] == 150 and result["bootstrap"]["difference"] == pytest.approx(
        manager.load_run("bert_baseline_v1_abc123").metric("test/f1_macro")
        - manager.load_run("distilbert_fast_v1_def456").metric("test/f1_macro"))


def test_slices_show_a_classifier_weak_on_one_political_side(runs_dir):
    comparison = ExperimentManager(runs_dir, num_resamples=100).compare_runs(
        ["roberta_left_v1_aaa111", "bert_baseline_v1_abc123"])
    by_type = comparison["slices"]["roberta_left_v1_aaa111"]["type"]
    assert set(by_type) == {"left", "center", "right"}  # empty `type` rows are left out
    assert sum(entry["n"] for entry in by_type.values()) == 135
    assert by_type["left"]["f1_macro"] < by_type["right"]["f1_macro"] - 0.2
    assert by_type["left"]["accuracy"] < by_type["center"]["accuracy"] - 0.2
    outlets = comparison["slices"]["bert_baseline_v1_abc123"]["outlet"]
    assert sum(entry["n"] for entry in outlets.values()) == 150 and len(outlets) == 6
    assert set(comparison["slices"]["bert_baseline_v1_abc123"]["topic"]) == set(TOPICS)


# ---- cross-validation ------------------------------------------------------------------

def test_aggregate_cross_validation_means_and_stds_every_metric():
    folds = [{"status": "completed", "eval": {"f1_macro": 0.6, "loss": 0.9},
              "test": {"f1_macro": value, "accuracy": value + 0.05, "per_class": {},
                       "confusion_matrix": [[1, 0], [0, 1]], "label_names": ["a", "b"]}}
             for value in (0.7, 0.8, 0.9)]
    folds.append({"status": "failed", "error": "boom"})
    summary = aggregate_cross_validation(folds)
    assert summary["num_folds"] == 3
    assert [fold["fold"] for fold in summary["folds"]] == [1, 2, 3]
    assert summary["folds"][1]["test"] == {"f1_macro": 0.8, "accuracy": pytest.approx(0.85)}
    assert summary["mean"]["test/f1_macro"] == pytest.approx(0.8)
    assert summary["std"]["test/f1_macro"] == pytest.approx(np.std([0.7, 0.8, 0.9], ddof=1))
    assert summary["mean"]["eval/loss"] == pytest.approx(0.9)
    assert summary["test_confusion_matrix"] == [[3, 0], [0, 3]]
    assert summary["failed_folds"] == [{"fold": 4, "status": "failed", "error": "boom"}]


def test_cv_parent_is_one_run_with_folds_and_competes_on_fold_means(runs_dir):
    make_cv_run(runs_dir, "bert_cv_v1_cv0001", folds=3, accuracy=0.95)
    manager = ExperimentManager(runs_dir, num_resamples=100)
    ids = [run.run_id for run in manager.list_runs()]
    assert "bert_cv_v1_cv0001" in ids and not any("fold-" in run_id for run_id in ids)
    parent = manager.load_run("bert_cv_v1_cv0001")
    assert parent.is_cross_validation and [fold.path.name for fold in parent.folds] == [
        "fold-1", "fold-2", "fold-3"]
    assert manager.get_best_run("eval/f1_macro") == "bert_cv_v1_cv0001"
    fold_means = np.mean([fold.metric("test/f1_macro") for fold in parent.folds])
    assert parent.metric("test/f1_macro") == pytest.approx(fold_means)
    assert parent.metric_std("test/f1_macro") > 0
    assert manager.load_run("bert_cv_v1_cv0001/fold-2").path.name == "fold-2"
    comparison = manager.compare_runs(["bert_cv_v1_cv0001", "bert_baseline_v1_abc123",
                                       "distilbert_fast_v1_def456"])
    assert comparison["confidence_intervals"]["bert_cv_v1_cv0001"]["f1_macro"]["n"] == 180
    pooled = comparison["per_class"]["bert_cv_v1_cv0001"]  # from the summed fold matrices
    assert sum(scores["support"] for scores in pooled.values()) == 180
    # the CV run (best) tested on other sentences must not stop the other two being compared
    tests = {(entry["run_a"], entry["run_b"]): entry for entry in comparison["significance"]}
    assert "same test sentences" in tests[("bert_cv_v1_cv0001", "bert_baseline_v1_abc123")][
        "error"]
    assert tests[("bert_baseline_v1_abc123", "distilbert_fast_v1_def456")]["significant"]
    table = format_comparison_table([parent.path])
    assert re.search(r"bert_cv_v1_cv0001\s+completed \(cv\)\s+\d\.\d{4}±\d\.\d{4}", table)


# ---- table, command, report ------------------------------------------------------------

def test_comparison_table_marks_the_best_run_and_explains_failures(runs_dir):
    table = format_comparison_table([runs_dir / "bert_baseline_v1_abc123",
                                     runs_dir / "distilbert_fast_v1_def456",
                                     runs_dir / "crashed_v1_bbb222"])
    lines = table.splitlines()
    best_line = next(line for line in lines if "bert_baseline_v1_abc123" in line)
    assert best_line.startswith("*")
    f1 = ExperimentManager(runs_dir).load_run("bert_baseline_v1_abc123").metric("test/f1_macro")
    assert f"{f1:.4f}" in best_line
    assert any("crashed_v1_bbb222: failed: CUDA out of memory" in line for line in lines)


def test_compare_command_writes_a_self_contained_report(runs_dir, capsys):
    status = compare_command(["bert_baseline_v1_abc123", "distilbert_fast_v1_def456"], runs_dir)
    report = runs_dir.parent / "comparison.html"
    out = capsys.readouterr().out
    assert status == 0 and report.is_file() and str(report) in out
    assert "bert_baseline_v1_abc123" in out and "distilbert_fast_v1_def456" in out
    text = report.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing fetched
    assert "<svg" in text and 'id="runs-table"' in text and 'id="config-diff"' in text
    for href in re.findall(r'<a href="([^"]+)"', text):
        assert (report.parent / href).is_dir()


def test_compare_command_without_names_reports_every_run(runs_dir, tmp_path):
    output = tmp_path / "all.html"
    assert compare_command([], runs_dir, output) == 0
    text = output.read_text()
    for run_id in ("bert_baseline_v1_abc123", "crashed_v1_bbb222", "broken_v1_eee555"):
        assert f'data-run-id="{run_id}"' in text
    assert "CUDA out of memory" in text


def test_compare_metric_picks_the_best_run_and_the_paired_test(runs_dir, tmp_path, capsys):
    import html

    from support.cli import run_cli, run_main

    report = tmp_path / "weighted.html"
    completed = run_main(capsys, "compare", "bert_baseline_v1_abc123", "distilbert_fast_v1_def456",
                        "--metric", "f1_weighted", "--runs-dir", str(runs_dir),
                        "--report", str(report))
    assert completed.returncode == 0, completed.stderr
    text = html.unescape(re.sub(r"<[^>]+>", " ", report.read_text()))
    assert "best run by eval/f1_weighted" in text and "Δ test F1 weighted" in text
    expected = ExperimentManager(runs_dir).paired_test(
        "bert_baseline_v1_abc123", "distilbert_fast_v1_def456", "f1_weighted")
    difference = expected["bootstrap"]["difference"]
    assert f"{difference:+.4f}" in text
    refused = run_cli("compare", "--metric", "f2", "--runs-dir", str(runs_dir))
    assert refused.returncode == 2 and "invalid choice: 'f2'" in refused.stderr


def test_compare_command_rejects_an_unknown_run(runs_dir):
    with pytest.raises(UserError, match="unknown run 'distilbert_fast_v2'.*distilbert_fast_v1"):
        compare_command(["distilbert_fast_v2"], runs_dir)


# ---- published reference rows ---------------------------------------------------------

BINARY = ["Non-biased", "Biased"]
PAPER_PROTOCOL = {"seed": 42, "data.dataset": "babe", "data.subset": "SG2",
                  "data.filter_no_agreement": True, "data.cv_folds": 5, "model.num_labels": 2}
PUBLISHED_F1_WEIGHTED = {"BERT-base": 0.789, "DistilBERT": 0.777, "RoBERTa-base": 0.799,
                         "ELECTRA-small": 0.760, "BERT + distant supervision": 0.804,
                         "DA-RoBERTa": 0.814}
PUBLISHED_ACCURACY = {"BERT-base": 0.789, "DistilBERT": 0.778, "RoBERTa-base": 0.801,
                      "ELECTRA-small": 0.763, "BERT + distant supervision": 0.805}
WEIGHTED_F1_COLUMN = 6  # star, run, status, tags, accuracy, F1 macro, F1 weighted, ...


@pytest.fixture
def babe_runs_dir(tmp_path) -> Path:
    """A 5-fold CV run under the paper protocol and a single-split run, both binary BABE."""
    runs = tmp_path / "babe" / "runs"
    source = {"source": "/data/babe/final_labels_SG2.csv"}
    make_cv_run(runs, "minilm_paper_v1_aaa001", folds=5, accuracy=0.8, labels=BINARY,
                config=PAPER_PROTOCOL, results_data=source)
    make_run(runs, "minilm_split_v1_bbb002", accuracy=0.72, labels=BINARY, seed=9,
             config={**PAPER_PROTOCOL, "data.cv_folds": 0, "seed": 7}, results_data=source,
             started_at="2026-01-02T10:00:00+00:00")
    return runs


def _row(text: str, attribute: str, value: str) -> str:
    match = re.search(rf'<tr [^>]*{attribute}="{re.escape(value)}".*?</tr>', text, re.DOTALL)
    assert match, f"no row with {attribute}={value!r}"
    return match.group(0)


def _cells(row: str) -> list[str]:
    return re.findall(r'<td[^>]*data-value="([^"]*)"', row)


def test_published_figures_are_the_papers_table():
    from backend.ml.experiments.published import published_protocol, published_results
    rows = published_results()
    assert {row.model: row.metric("test/f1_weighted") for row in rows} == PUBLISHED_F1_WEIGHTED
    assert {row.model: row.metric("test/accuracy") for row in rows
            if row.metric("test/accuracy") is not None} == PUBLISHED_ACCURACY
    assert all(row.metric("eval/f1_macro") is None for row in rows)  # papers give test only
    assert {row.source for row in rows} == {"Spinde et al. 2021", "Krieger et al. 2022"}
    assert "Findings of EMNLP 2021" in rows[0].reference
    assert published_protocol() == {"dataset": "babe", "subset": "SG2",
                                    "filter_no_agreement": True, "cv_folds": 5, "seed": 42,
                                    "metric": "test/f1_weighted"}


def test_report_shows_published_rows_beside_binary_babe_runs(babe_runs_dir):
    report = babe_runs_dir.parent / "comparison.html"
    compare_command([], babe_runs_dir, report)
    text = report.read_text()
    assert re.findall(r'data-published="([^"]+)"', text) == list(PUBLISHED_F1_WEIGHTED)
    for model, f1 in PUBLISHED_F1_WEIGHTED.items():
        row = _row(text, "data-published", model)
        assert 'class="published"' in row and ">published</span>" in row
        cells = _cells(row)
        assert float(cells[WEIGHTED_F1_COLUMN]) == f1 and f"{f1:.3f}" in row
        accuracy = PUBLISHED_ACCURACY.get(model)
        assert cells[4] == ("" if accuracy is None else repr(accuracy))
        assert cells[5] == ""  # no published macro F1: the cell stays empty, never zero
    note = text[text.index('id="published-reference"'):]
    assert "minilm_paper_v1_aaa001" in note.split("differs")[0]  # same protocol
    assert "minilm_split_v1_bbb002 differs: single split, not 5-fold CV; seed 7, not 42" in note
    assert "Findings of EMNLP 2021" in note and "JCDL 2022" in note
    assert "paper protocol</span>" in _row(text, "data-run-id", "minilm_paper_v1_aaa001")
    assert "paper protocol</span>" not in _row(text, "data-run-id", "minilm_split_v1_bbb002")
    chart = note[note.index("<svg"):note.index("</svg>")]
    assert "DA-RoBERTa (published)" in chart and "minilm_paper_v1_aaa001" in chart


def test_cv_run_shows_its_fold_mean_weighted_f1_against_the_published_rows(babe_runs_dir):
    parent = babe_runs_dir / "minilm_paper_v1_aaa001"
    per_fold = []
    for fold in sorted((parent / "folds").iterdir()):  # recomputed from each fold's predictions
        frame = __import__("pandas").read_csv(fold / "predictions" / "test_predictions.csv")
        per_fold.append(f1_score(frame["true_label"], frame["predicted_label"],
                                 average="weighted"))
    mean, std = np.mean(per_fold), np.std(per_fold, ddof=1)
    report = babe_runs_dir.parent / "comparison.html"
    compare_command([], babe_runs_dir, report)
    row = _row(report.read_text(), "data-run-id", "minilm_paper_v1_aaa001")
    assert float(_cells(row)[WEIGHTED_F1_COLUMN]) == pytest.approx(mean)
    assert f"{mean:.4f}±{std:.4f}" in row and "CV 5 folds" in row
    table = format_comparison_table([parent])
    assert re.search(rf"minilm_paper_v1_aaa001\s+completed \(cv\)(\s+\S+){{2}}\s+"
                     rf"{mean:.4f}±{std:.4f}", table)
    assert re.search(r"\n\s+DA-RoBERTa\s+published\s+-\s+-\s+0\.814\s", table)
    assert re.search(r"\n\s+BERT-base\s+published\s+0\.789\s+-\s+0\.789\s", table)
    assert "not runs of this project" in table


def test_report_on_other_data_shows_no_published_rows(runs_dir, babe_runs_dir):
    report = runs_dir.parent / "comparison.html"
    compare_command([], runs_dir, report)  # the demo dataset, three classes
    text = report.read_text()
    assert "data-published" not in text and "published-reference" not in text
    assert "published" not in format_comparison_table(sorted(runs_dir.iterdir()))
    three_classes = make_run(babe_runs_dir, "babe_three_v1_ccc003",
                             config={"data.dataset": "babe"})  # "No agreement" kept
    compare_command([three_classes.name], babe_runs_dir, report)
    assert "data-published" not in report.read_text()


def test_report_escapes_what_runs_contain(runs_dir):
    hostile = "<img src=x onerror=alert(1)>"
    make_run(runs_dir, f"evil{hostile}_v1_fff777", tags=("<script>alert(2)</script>",),
             config={"model.model_name": "<b>bold</b>", "training.learning_rate": 3e-5})
    report = runs_dir.parent / "comparison.html"
    compare_command([f"evil{hostile}_v1_fff777", "bert_baseline_v1_abc123"], runs_dir, report)
    text = report.read_text()
    assert hostile not in text and "<script>alert" not in text
    assert "evil&lt;img src=x onerror=alert(1)&gt;_v1_fff777" in text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in text
    differences = text[text.index('id="config-diff"'):text.index("</table>",
                                                                 text.index('id="config-diff"'))]
    assert "<td>&lt;b&gt;bold&lt;/b&gt;</td>" in differences and "<b>" not in differences
    legend = text[text.index('aria-label="Training loss"'):]
    assert "evil&lt;img src=x onerror=alert(1)&gt;_v1_fff777" in legend[:legend.index("</svg>")]


# ---- the report in a real browser ------------------------------------------------------

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="Debian chromium not installed at /usr/bin/chromium "
                                           "(apt-get install chromium)")


class _Browser:
    """A headless Chromium page on a report, recording errors, dialogs and requests."""

    def __init__(self, report: Path):
        self.report = report
        self.errors: list[str] = []
        self.requests: list[str] = []

    def __enter__(self):
        sync_api = pytest.importorskip("playwright.sync_api",
                                       reason="playwright not installed (pip install playwright)")
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.playwright = sync_api.sync_playwright().start()
        self.browser = self.playwright.chromium.launch_persistent_context(
            self.profile, executable_path=str(CHROMIUM), headless=True,
            viewport={"width": 1400, "height": 1000},
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"])
        page = self.browser.new_page()
        page.on("console", lambda message: self.errors.append(message.text)
                if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("dialog", lambda dialog: (self.errors.append(f"dialog: {dialog.message}"),
                                          dialog.dismiss()))
        page.on("request", lambda request: self.requests.append(request.url))
        page.goto(self.report.as_uri())
        page.wait_for_load_state("load")
        self.page = page
        return self

    def __exit__(self, *exc_info):
        try:
            self.browser.close()
            self.playwright.stop()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def row_keys(self) -> list[str]:
        """Runs table rows in page order: run ids, and ``published:MODEL`` for reference rows."""
        return self.page.eval_on_selector_all(
            "#runs-table tbody tr",
            "rows => rows.map(r => r.dataset.runId || 'published:' + r.dataset.published)")


@needs_chromium
def test_report_opens_in_chromium_without_errors_and_sorts(runs_dir):
    make_cv_run(runs_dir, "bert_cv_v1_cv0001", folds=2)
    make_run(runs_dir, "evil<img src=x onerror=alert(1)>_v1_fff777")
    report = runs_dir.parent / "comparison.html"
    compare_command([], runs_dir, report)
    with _Browser(report) as browser:
        page = browser.page
        shown = browser.row_keys()
        assert set(shown) == {path.name for path in runs_dir.iterdir()}
        best = page.eval_on_selector("#runs-table tr.best", "row => row.dataset.runId")
        assert best == ExperimentManager(runs_dir).get_best_run("eval/f1_macro")

        header = page.locator("#runs-table thead th", has_text="test F1 macro")
        header.click()
        ascending = browser.row_keys()
        manager = ExperimentManager(runs_dir)
        scored = sorted((run for run in manager.list_runs()
                         if run.metric("test/f1_macro") is not None),
                        key=lambda run: run.metric("test/f1_macro"))
        assert ascending[:len(scored)] == [run.run_id for run in scored]
        assert header.get_attribute("aria-sort") == "ascending"
        header.click()
        assert browser.row_keys()[:len(scored)] == [run.run_id for run in reversed(scored)]
        page.locator("#runs-table thead th", has_text="run").first.click()
        assert browser.row_keys() == sorted(shown, key=str.lower)

        charts = page.eval_on_selector_all(
            "#learning-curves figure.chart svg",
            "svgs => svgs.map(s => [s.getBoundingClientRect().width, s.textContent])")
        assert len(charts) == 3 and all(width > 200 for width, _ in charts)
        assert all("bert_baseline_v1_abc123" in legend for _, legend in charts)

        artifacts = REPO / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        page.screenshot(path=str(artifacts / "comparison.png"), full_page=True)
    assert browser.errors == []
    assert all(url.startswith(("file:", "data:")) for url in browser.requests)
    assert (REPO / "test-artifacts" / "comparison.png").stat().st_size > 10_000


@needs_chromium
def test_published_rows_sort_among_our_runs_in_chromium(babe_runs_dir):
    report = babe_runs_dir.parent / "comparison.html"
    compare_command([], babe_runs_dir, report)
    manager = ExperimentManager(babe_runs_dir)
    expected = {f"published:{model}": f1 for model, f1 in PUBLISHED_F1_WEIGHTED.items()}
    expected.update({run.run_id: run.metric("test/f1_weighted") for run in manager.list_runs()})
    with _Browser(report) as browser:
        page = browser.page
        assert browser.row_keys()[:2] == ["minilm_paper_v1_aaa001", "minilm_split_v1_bbb002"]
        page.locator("#runs-table thead th", has_text="test F1 weighted").click()
        assert browser.row_keys() == sorted(expected, key=expected.get)
        styles = page.eval_on_selector_all(
            "#runs-table tr.published",
            "rows => rows.map(r => [getComputedStyle(r).fontStyle, r.textContent])")
        assert len(styles) == 6
        assert all(style == "italic" and "published" in text for style, text in styles)
        assert page.locator("#published-reference svg").count() == 1
        artifacts = REPO / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        page.screenshot(path=str(artifacts / "comparison-published.png"), full_page=True)
    assert browser.errors == []
    assert all(url.startswith(("file:", "data:")) for url in browser.requests)
