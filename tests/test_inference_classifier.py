"""BiasClassifier on tiny offline models: what the news app gets back for sentences and articles."""

import json
import shutil

import numpy as np
import pytest
import torch

from backend.ml.bias_classifier import NO_PREDICTION, BiasClassifier, InputError, ModelLoadError
from backend.ml.errors import UserError
from backend.ml.inference import loading
from backend.ml.inference.loading import configure_threads
from backend.ml.inference.sentences import split_sentences
from backend.ml.metrics import softmax
from support.inference import (
    LABELS,
    NEWS_SENTENCES,
    direct_logits,
    make_run_dir,
    make_tiny_model_dir,
    tiny_tokenizer,
)

ARTICLE = ("The senator's reckless scheme is a disaster for working families. Officials "
           "released the quarterly figures on Tuesday. Mr. Smith met Dr. Jones in the U.S. "
           "capital on Jan. 5. Critics called the plan a radical power grab.")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "final_model", max_length=64)


@pytest.fixture(scope="module")
def classifier(model_dir):
    # fp32: the figures below are checked against a plain fp32 forward pass.
    return BiasClassifier(batch_size=4, precision="fp32").load_model(model_dir)


def test_sentence_result_has_label_confidence_and_probabilities(classifier, model_dir):
    results = classifier.predict_with_confidence(NEWS_SENTENCES)
    expected = softmax(direct_logits(model_dir, NEWS_SENTENCES))
    assert len(results) == len(NEWS_SENTENCES)
    for result, row in zip(results, expected):
        probabilities = np.array([result["probabilities"][name] for name in LABELS])
        assert result["status"] == "ok" and result["num_sentences"] == 1
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-9)
        assert probabilities == pytest.approx(row, abs=1e-5)  # the model's own answer
        assert result["label"] == LABELS[int(row.argmax())]
        assert result["confidence"] == pytest.approx(row.max(), abs=1e-5)
        assert result["calibrated"] is False  # this model has no calibration.json
        assert "sentences" not in result
    assert len({result["label"] for result in results}) > 1  # the tiny model does discriminate


def test_same_text_alone_and_in_a_batch(classifier):
    batch = ["Short one.", *NEWS_SENTENCES, "A much longer sentence " * 3 + "that pads others."]
    together = classifier.predict_with_confidence(batch)
    for text, result in zip(batch, together):
        alone = classifier.predict_with_confidence(text)  # a single input gives a single result
        assert alone["label"] == result["label"]
        for name in LABELS:
            assert alone["probabilities"][name] == pytest.approx(result["probabilities"][name],
                                                                 abs=1e-5)


def test_predict_gives_plain_labels(classifier):
    labels = classifier.predict(NEWS_SENTENCES[:3])
    assert labels == [r["label"] for r in classifier.predict_with_confidence(NEWS_SENTENCES[:3])]
    assert all(label in LABELS for label in labels)


def test_article_is_split_into_sentences_and_aggregated(classifier):
    result = classifier.predict_with_confidence({"id": "a1", "text": ARTICLE})
    sentences = split_sentences(ARTICLE)
    assert len(sentences) == 4 and result["id"] == "a1"
    assert result["num_sentences"] == 4
    assert [s["text"] for s in result["sentences"]] == sentences
    for entry in result["sentences"]:
        assert ARTICLE[entry["start"]:entry["end"]] == entry["text"]
        alone = classifier.predict_with_confidence(entry["text"])
        assert entry["label"] == alone["label"]
        assert entry["biased_score"] == pytest.approx(alone["probabilities"]["Biased"], abs=1e-5)
    # The article's probabilities are the mean over its sentences.
    mean = np.mean([[s["probabilities"][n] for n in LABELS] for s in result["sentences"]], axis=0)
    assert [result["probabilities"][n] for n in LABELS] == pytest.approx(mean)
    assert result["label"] == LABELS[int(mean.argmax())]

    summary = result["summary"]
    biased = [s for s in result["sentences"] if s["label"] == "Biased"]
    assert summary["num_sentences"] == 4
    assert summary["biased_count"] == len(biased)
    assert summary["biased_share"] == pytest.approx(len(biased) / 4)
    assert sum(summary["label_counts"].values()) == 4
    scores = [entry["score"] for entry in summary["most_biased"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(max(s["biased_score"] for s in result["sentences"]))


def test_title_counts_as_a_sentence(classifier):
    result = classifier.predict_with_confidence(
        [{"id": 7, "title": "Radical power grab", "text": NEWS_SENTENCES[0]}])[0]
    assert result["id"] == 7 and result["num_sentences"] == 2
    assert [s["part"] for s in result["sentences"]] == ["title", "text"]
    assert result["sentences"][0]["start"] is None


def test_long_sentence_is_read_in_windows_not_truncated(classifier):
    # One "sentence" of ~280 tokens for a model that takes 64 per window.
    head = " ".join(NEWS_SENTENCES * 2).replace(".", ",")
    versions = [head + " the vote was delayed", head + " critics called the scheme shameful"]
    results = classifier.predict_with_confidence(versions)
    assert all(result["num_sentences"] == 1 for result in results)
    assert all(result["windows"] >= 4 for result in results)
    # Only the last words differ: a truncating classifier would answer the same for both.
    assert results[0]["probabilities"] != pytest.approx(results[1]["probabilities"], abs=1e-6)
    assert sum(results[0]["probabilities"].values()) == pytest.approx(1.0)


def test_bad_inputs_get_no_prediction_and_the_batch_goes_on(classifier):
    inputs = [NEWS_SENTENCES[0], "", "   \n ", None, 42, {"title": None, "id": 3},
              {"text": ["not", "text"], "id": 4}, {"id": 5, "text": NEWS_SENTENCES[1]}]
    results = classifier.predict_with_confidence(inputs)
    assert [r["status"] for r in results] == ["ok"] + [NO_PREDICTION] * 6 + ["ok"]
    assert results[1]["error"] == "empty text" and results[2]["error"] == "empty text"
    assert "NoneType is not text" in results[3]["error"]
    assert "int is not text" in results[4]["error"]
    assert "no 'text'" in results[5]["error"] and results[5]["id"] == 3
    assert "'text' is list" in results[6]["error"] and results[6]["id"] == 4
    assert all(r["label"] is None and r["probabilities"] is None for r in results[1:7])
    assert results[7]["id"] == 5
    assert classifier.predict(["", NEWS_SENTENCES[0]])[0] is None
    assert classifier.predict_with_confidence([]) == []


def test_predict_proba_refuses_empty_text(classifier):
    with pytest.raises(InputError, match="non-empty strings"):
        classifier.predict_proba(["fine", ""])


def test_calibration_file_sets_the_temperature(tmp_path, model_dir):
    calibrated_dir = tmp_path / "model"
    shutil.copytree(model_dir, calibrated_dir)
    (calibrated_dir / "calibration.json").write_text(json.dumps(
        {"method": "temperature_scaling", "temperature": 2.5, "fitted_on": "validation"}))
    classifier = BiasClassifier(precision="fp32").load_model(calibrated_dir)
    result = classifier.predict_with_confidence(NEWS_SENTENCES[1])
    expected = softmax(direct_logits(model_dir, [NEWS_SENTENCES[1]]), temperature=2.5)[0]
    assert classifier.temperature == 2.5 and result["calibrated"] is True
    assert [result["probabilities"][n] for n in LABELS] == pytest.approx(expected, abs=1e-5)

    (calibrated_dir / "calibration.json").write_text('{"temperature": -1}')
    with pytest.raises(ModelLoadError, match="positive"):
        BiasClassifier().load_model(calibrated_dir)


def test_missing_calibration_is_stated(classifier):
    assert classifier.temperature == 1.0 and not classifier.is_calibrated
    assert "no calibration.json" in classifier.calibration["note"]


def test_run_directory_run_id_and_errors(tmp_path, monkeypatch):
    run_dir = make_run_dir(tmp_path / "experiments" / "runs" / "tiny_abc123")
    assert BiasClassifier().load_model(run_dir).predict(["The vote was delayed."])[0] in LABELS
    monkeypatch.chdir(tmp_path)  # a bare run id is looked up under experiments/runs
    assert BiasClassifier().load_model("tiny_abc123").label_names == LABELS
    with pytest.raises(UserError, match="No run or model named 'nowhere'.*tiny_abc123"):
        BiasClassifier().load_model("nowhere")
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "empty_run" / "results.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no final_model/"):
        BiasClassifier().load_model(tmp_path / "empty_run")
    with pytest.raises(InputError, match="load_model"):
        BiasClassifier().predict(["text"])


def test_custom_head_model_loads(tmp_path):
    models = pytest.importorskip("backend.ml.models")

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = models.BiasHeadConfig(
        encoder_config={"model_type": "bert", "vocab_size": len(tokenizer), "hidden_size": 32,
                        "num_hidden_layers": 2, "num_attention_heads": 2,
                        "intermediate_size": 37, "max_position_embeddings": 64},
        id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    model = models.BiasHeadModel(config).eval()
    models.save_model(model, tokenizer, tmp_path / "final_model", LABELS)
    classifier = BiasClassifier(precision="fp32").load_model(tmp_path / "final_model")
    encoded = tokenizer([NEWS_SENTENCES[2]], return_tensors="pt")
    with torch.inference_mode():
        expected = softmax(model(**encoded).logits.numpy())[0]
    result = classifier.predict_with_confidence(NEWS_SENTENCES[2])
    assert classifier.label_names == LABELS
    assert [result["probabilities"][n] for n in LABELS] == pytest.approx(expected, abs=1e-5)


def test_onnx_export_of_tiny_model_agrees(tmp_path, model_dir, classifier):
    pytest.importorskip("onnxruntime")
    from backend.ml.inference.export import copy_bundle, export_onnx
    from backend.ml.inference.loading import load_torch_model

    copy_bundle(model_dir, tmp_path)
    onnx_path = export_onnx(load_torch_model(model_dir), tmp_path / "model.onnx")
    exported = BiasClassifier(batch_size=3).load_model(onnx_path)
    assert exported.runtime == "onnx"
    texts = NEWS_SENTENCES + [ARTICLE]  # several batch shapes and sequence lengths
    assert exported.predict_proba(texts) == pytest.approx(classifier.predict_proba(texts), abs=1e-5)


def test_threads_respect_omp_num_threads(monkeypatch):
    # conftest gives the next test the thread count back.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert configure_threads() == 1 and torch.get_num_threads() == 1
    assert configure_threads(2) == 2  # an explicit request wins
    monkeypatch.delenv("OMP_NUM_THREADS")
    # A 2-CPU container quota on a host where torch would start 8 threads: 2 threads.
    monkeypatch.setattr(loading, "cpu_budget", lambda: 2)
    torch.set_num_threads(8)
    assert configure_threads() == 2 and torch.get_num_threads() == 2
    # With CPUs to spare, torch's own default stands.
    monkeypatch.setattr(loading, "cpu_budget", lambda: 64)
    torch.set_num_threads(3)
    assert configure_threads() == 3 and torch.get_num_threads() == 3


@pytest.mark.parametrize("architecture", ["mpnet", "custom"])
def test_an_mpnet_classifier_predicts_and_exports_to_onnx_alike(tmp_path, architecture):
    pytest.importorskip("onnxruntime")
    from backend.ml.config.schema import ModelConfig
    from backend.ml.inference.export import copy_bundle, export_onnx
    from backend.ml.inference.loading import load_torch_model
    from backend.ml.models import ModelFactory, save_model

    torch.manual_seed(0)
    built = ModelFactory.create(ModelConfig(
        architecture=architecture, encoder_architecture="mpnet", pretrained=False,
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        vocab_size=300, head_hidden_size=16), LABELS, NEWS_SENTENCES * 4)
    save_model(built.model.eval(), built.tokenizer, tmp_path / "final_model", LABELS)
    classifier = BiasClassifier(batch_size=3, precision="fp32").load_model(tmp_path / "final_model")
    texts = NEWS_SENTENCES + [ARTICLE]  # several batch shapes and sequence lengths
    with torch.inference_mode():
        expected = np.concatenate([
            softmax(built.model(**built.tokenizer(text, return_tensors="pt")).logits.numpy())
            for text in texts])
    assert classifier.predict_proba(texts) == pytest.approx(expected, abs=1e-5)

    copy_bundle(tmp_path / "final_model", tmp_path / "exports")
    onnx_path = export_onnx(load_torch_model(tmp_path / "final_model"),
                            tmp_path / "exports" / "model.onnx")
    exported = BiasClassifier(batch_size=3).load_model(onnx_path)
    assert exported.runtime == "onnx"
    assert exported.predict_proba(texts) == pytest.approx(expected, abs=1e-5)


def test_bf16_keeps_every_fp32_label_and_decides_close_calls_in_fp32(model_dir):
    texts = [f"{sentence} ({number})" for number in range(12) for sentence in NEWS_SENTENCES]
    exact = BiasClassifier(batch_size=8, precision="fp32").load_model(model_dir)
    fast = BiasClassifier(batch_size=8, precision="bf16").load_model(model_dir)
    assert (exact.precision, fast.precision) == ("fp32", "bf16")
    expected = exact.predict_proba(texts)
    got = fast.predict_proba(texts)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    # The first texts measured how far bf16 moves this model; they keep their fp32 result.
    from backend.ml.inference.classifier import PROBE_TEXTS, RECHECK_FLOOR

    probed = min(PROBE_TEXTS, len(texts))
    np.testing.assert_allclose(got[:probed], expected[:probed], atol=1e-6)
    assert fast.recheck_margin >= RECHECK_FLOOR
    # Later close calls were decided in fp32: their probabilities are fp32's.
    ordered = np.sort(expected[probed:], axis=1)
    close = probed + np.flatnonzero(ordered[:, -1] - ordered[:, -2] < fast.recheck_margin / 2)
    assert close.size  # a random tiny head makes many
    np.testing.assert_allclose(got[close], expected[close], atol=1e-6)
    assert np.abs(got - expected).max() < fast.recheck_margin / 2


def test_default_precision_follows_the_cpu_and_a_bad_one_is_refused(model_dir, tmp_path):
    from backend.ml.models.hardware import cpu_has_native_bf16

    texts = [f"{sentence} ({number})" for number in range(12) for sentence in NEWS_SENTENCES]
    native = "bf16" if cpu_has_native_bf16() else "fp32"
    default = BiasClassifier().load_model(model_dir)
    default.predict_proba(texts)
    assert default.precision == native
    # A head scaled towards zero puts its classes within hundredths of each other: after its
    # first 64 texts, nearly all close calls, the classifier stops paying for bf16 and rechecks.
    unsure = BiasClassifier().load_model(make_tiny_model_dir(tmp_path / "unsure", max_length=64,
                                                             head_scale=0.01))
    assert unsure.precision == native
    unsure.predict_proba(texts)
    assert unsure.precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp32"):
        BiasClassifier(precision="int8")
