"""A cross-validation run used whole by BiasClassifier: the mean of its calibrated fold models."""

import json
import shutil

import numpy as np
import pytest

from backend.ml.bias_classifier import BiasClassifier, ModelLoadError
from backend.ml.cli import main
from backend.ml.config import ExperimentConfig
from backend.ml.inference.loading import resolve_model_path
from backend.ml.run import run_cross_validation
from support.configs import tiny_config

SENTENCES = ["The senator's reckless scheme will ruin working families.",
             "Officials released the quarterly figures on Tuesday.",
             "Critics called the plan a radical power grab.",
             "The committee meets again next week."]


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    """A finished 2-fold cross-validation run of the tiny model, trained in this process."""
    runs_dir = tmp_path_factory.mktemp("cv_runs")
    config = ExperimentConfig.from_dict(tiny_config(
        data={"cv_folds": 2, "max_samples": 120},
        training={"epochs": 1},
        logging={"tensorboard": False}))
    return run_cross_validation(config, runs_dir, run_id="tiny_cv")


def fold_models(cv_run):
    return sorted((cv_run / "folds").glob("fold-*/final_model"))


def test_ensemble_probabilities_are_the_mean_of_the_calibrated_fold_models(cv_run):
    folds = fold_models(cv_run)
    assert len(folds) == 2 and all((fold / "calibration.json").is_file() for fold in folds)
    singles = [BiasClassifier().load_model(fold) for fold in folds]
    assert all(single.is_calibrated and single.ensemble_size == 1 for single in singles)

    ensemble = BiasClassifier().load_model(cv_run)

    expected = np.mean([single.predict_proba(SENTENCES) for single in singles], axis=0)
    assert ensemble.ensemble_size == 2 and ensemble.is_calibrated
    assert ensemble.predict_proba(SENTENCES) == pytest.approx(expected, abs=1e-6)
    # Each fold keeps its own temperature; there is no single one for the ensemble.
    assert ensemble.temperature is None
    assert [member["temperature"] for member in ensemble.calibration["members"]] == [
        single.temperature for single in singles]


def test_ensemble_results_keep_their_shape_and_say_how_many_models(cv_run):
    single = BiasClassifier().load_model(fold_models(cv_run)[0])
    ensemble = BiasClassifier().load_model(cv_run)

    one, together = single.predict_with_confidence(SENTENCES), ensemble.predict_with_confidence(
        SENTENCES)
    for alone, combined in zip(one, together):
        assert set(combined) == set(alone) | {"ensemble_size"}
        assert combined["ensemble_size"] == 2 and combined["calibrated"] is True
        probabilities = combined["probabilities"]
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-9)
        assert combined["label"] == max(probabilities, key=probabilities.get)
        assert combined["confidence"] == pytest.approx(max(probabilities.values()))
    article = ensemble.predict_with_confidence({"id": "a1", "text": " ".join(SENTENCES)})
    assert article["num_sentences"] == 4 and len(article["sentences"]) == 4
    assert article["summary"]["num_sentences"] == 4
    assert ensemble.predict(["", SENTENCES[0]])[0] is None


def test_cli_predict_takes_a_cross_validation_run_id(cv_run, tmp_path, capsys):
    source = tmp_path / "news.txt"
    source.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    output = tmp_path / "predictions.jsonl"

    code = main(["predict", cv_run.name, "--input", str(source), "--output", str(output),
                 "--runs-dir", str(cv_run.parent)])

    assert code == 0
    assert "ensemble of 2 fold models" in capsys.readouterr().err
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [row["id"] for row in rows] == [1, 2, 3, 4]
    assert all(row["status"] == "ok" and row["ensemble_size"] == 2 for row in rows)


def test_unfinished_fold_is_named(cv_run, tmp_path):
    broken = tmp_path / "broken_cv"
    shutil.copytree(cv_run, broken)
    shutil.rmtree(broken / "folds" / "fold-2" / "final_model")

    with pytest.raises(ModelLoadError, match="fold-2 has no final_model/"):
        BiasClassifier().load_model(broken)


def test_other_commands_still_ask_for_one_fold(cv_run):
    # Export and the registry work on one model; the message says which paths they take.
    with pytest.raises(ModelLoadError, match="pass one fold, e.g. .*folds/fold-1"):
        resolve_model_path(cv_run)
