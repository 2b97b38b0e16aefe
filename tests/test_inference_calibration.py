"""Temperature scaling: fitted on validation logits, saved with the model, used in inference."""

import json

import numpy as np
import pytest

from backend.ml.bias_classifier import BiasClassifier
from backend.ml.inference.calibration import (
    calibration_report,
    expected_calibration_error,
    fit_and_save_calibration,
    fit_temperature,
)
from backend.ml.metrics import softmax
from support.inference import NEWS_SENTENCES, direct_logits, make_tiny_model_dir


def synthetic_logits(n: int, sharpness: float, seed: int = 0):
    """Logits whose softmax at T = 1 is calibrated, multiplied by ``sharpness``."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1.5, (n, 3))
    labels = np.array([rng.choice(3, p=row) for row in softmax(base)])
    return sharpness * base, labels


def test_ece_of_known_cases():
    assert expected_calibration_error([[0.9, 0.1], [0.9, 0.1]], [0, 1]) == pytest.approx(0.4)
    assert expected_calibration_error([[0.9, 0.1], [0.1, 0.9]], [0, 1]) == pytest.approx(0.1)
    assert expected_calibration_error(np.zeros((0, 3)), []) == 0.0


@pytest.mark.parametrize("sharpness, direction", [(4.0, "up"), (0.3, "down")])
def test_fitted_temperature_undoes_over_and_under_confidence(sharpness, direction):
    logits, labels = synthetic_logits(3000, sharpness)
    temperature = fit_temperature(logits, labels)
    # The logits are the calibrated ones times ``sharpness``: the right temperature is that factor.
    assert temperature == pytest.approx(sharpness, rel=0.15)
    assert (temperature > 1) == (direction == "up")
    report = calibration_report(logits, labels, temperature)
    assert report["ece_after"] < report["ece_before"]


def test_fit_and_save_writes_the_documented_file(tmp_path):
    logits, labels = synthetic_logits(500, 3.0)
    returned = fit_and_save_calibration(logits, labels, tmp_path)
    saved = json.loads((tmp_path / "calibration.json").read_text())
    assert saved == returned
    assert saved["method"] == "temperature_scaling" and saved["fitted_on"] == "validation"
    assert saved["num_samples"] == 500 and saved["num_bins"] == 15
    assert saved["temperature"] > 1 and saved["ece_after"] < saved["ece_before"]
    assert not list(tmp_path.glob(".calibration*"))  # no temporary file left behind


def test_no_validation_sample_keeps_temperature_one(tmp_path):
    saved = fit_and_save_calibration(np.zeros((0, 3)), np.zeros(0, dtype=int), tmp_path)
    assert saved["temperature"] == 1.0 and "no validation samples" in saved["note"]


@pytest.mark.parametrize("logits, labels, message", [
    (np.full((2, 3), np.nan), [0, 1], "NaN"),
    (np.zeros((2, 3)), [0, 3], "labels must lie"),
    (np.zeros((2, 3)), [0], "expected logits"),
])
def test_bad_calibration_input_is_rejected(tmp_path, logits, labels, message):
    with pytest.raises(ValueError, match=message):
        fit_and_save_calibration(logits, np.array(labels), tmp_path)


def test_calibration_lowers_ece_of_an_over_confident_model(tmp_path):
    """End to end: a model that is sure of everything, calibrated on validation, tested on test."""
    model_dir = make_tiny_model_dir(tmp_path / "model", max_length=64, head_scale=10.0,
                                    seed=3)
    texts = [f"{a} {b.lower()}" for a in NEWS_SENTENCES for b in NEWS_SENTENCES]  # 64 texts
    classifier = BiasClassifier(precision="fp32").load_model(model_dir)
    raw = classifier.predict_proba(texts)
    assert raw.max(axis=1).mean() > 0.85  # sure of almost everything
    # Labels agree with the model only about half the time.
    rng = np.random.default_rng(0)
    agrees = rng.random(len(texts)) < 0.5
    labels = np.where(agrees, raw.argmax(axis=1), rng.integers(0, 3, len(texts)))
    validation, test = slice(0, 32), slice(32, 64)

    # What the trainer does at the end: validation logits of the best model.
    validation_logits = direct_logits(model_dir, texts[validation])
    saved = fit_and_save_calibration(validation_logits, labels[validation], model_dir)
    calibrated = BiasClassifier(precision="fp32").load_model(model_dir)
    assert calibrated.is_calibrated
    assert calibrated.temperature == pytest.approx(saved["temperature"])
    after = calibrated.predict_proba(texts)

    assert saved["temperature"] > 2
    # Dividing by T keeps each sentence's winner (every text here fits in one window).
    assert np.array_equal(after.argmax(axis=1), raw.argmax(axis=1))
    ece_before = expected_calibration_error(raw[test], labels[test])
    ece_after = expected_calibration_error(after[test], labels[test])
    assert ece_after < ece_before
    result = calibrated.predict_with_confidence([texts[40]])[0]
    assert result["calibrated"] is True
    assert result["confidence"] == pytest.approx(after[40].max())


def test_a_run_fits_its_temperature_on_its_validation_split(tiny_run_dir):
    import csv

    results = json.loads((tiny_run_dir / "results.json").read_text(encoding="utf-8"))
    saved = json.loads((tiny_run_dir / "final_model" / "calibration.json").read_text(
        encoding="utf-8"))
    with open(tiny_run_dir / "predictions" / "test_predictions.csv", encoding="utf-8") as stream:
        test_rows = sum(1 for _ in csv.DictReader(stream))
    sizes = {name: split["size"] for name, split in results["data"]["splits"].items()}
    # 150 demo sentences, 60% train and 20% validation: the temperature saw the 30 validation
    # sentences; the test sentences are another 30, scored with it.
    assert saved["fitted_on"] == "validation"
    assert saved["num_samples"] == sizes["validation"] == 30
    assert test_rows == sizes["test"] and sizes["train"] == 90
    assert saved["temperature"] > 0 and saved["ece_after"] is not None
