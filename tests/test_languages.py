"""Languages: detection on short news sentences, what a run records, and the policy for inputs
in a language the model was not trained on, from Python, the CLI and over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from backend.ml.bias_classifier import BiasClassifier
from backend.ml.cli import main
from backend.ml.languages import (
    LANGUAGES_FILE,
    _identifier,
    detect_language,
    training_languages,
    write_training_languages,
)
from backend.ml.serving.app import ServedModel, create_app
from backend.ml.serving.logs import read_predictions
from backend.ml.serving.server import BackgroundServer
from support.inference import NEWS_SENTENCES, make_tiny_model_dir
from support.multilingual_news import NEWS_BY_LANGUAGE

GERMAN = "Die radikalen Aktivisten inszenierten eine peinliche Aktion vor dem Bundeshaus."
ENGLISH = "Officials released the quarterly figures on Tuesday."


@pytest.fixture(scope="module")
def english_model(tmp_path_factory) -> Path:
    """A tiny model whose training languages are those of English news sentences."""
    model_dir = make_tiny_model_dir(tmp_path_factory.mktemp("english") / "final_model")
    write_training_languages(model_dir, training_languages(NEWS_SENTENCES * 5))
    return model_dir


def test_short_news_sentences_in_four_languages_are_detected():
    wrong = [(language, sentence, detect_language(sentence).code)
             for language, sentences in NEWS_BY_LANGUAGE.items() for sentence in sentences
             if detect_language(sentence).code != language]
    assert wrong == []
    assert sum(len(sentences) for sentences in NEWS_BY_LANGUAGE.values()) == 120
    assert detect_language("12:30 / 4.5%").code == "und"  # no letters: nothing to tell


def test_a_mixed_corpus_records_each_language_with_its_share():
    record = training_languages(NEWS_BY_LANGUAGE["en"] * 3 + NEWS_BY_LANGUAGE["de"])
    assert record["languages"] == ["de", "en"]
    assert record["shares"] == {"en": 0.75, "de": 0.25}
    assert record["sentences"] == 120 and record["detector"].startswith("py3langid ")


def test_a_run_records_its_training_languages_for_inference(tiny_run_dir):
    results = json.loads((tiny_run_dir / "results.json").read_text(encoding="utf-8"))
    languages = results["data"]["languages"]
    assert languages["languages"] == ["en"]
    assert languages["sentences"] == results["data"]["splits"]["train"]["size"]
    assert languages["shares"]["en"] > 0.95
    saved = json.loads((tiny_run_dir / "final_model" / LANGUAGES_FILE).read_text("utf-8"))
    assert saved == languages
    assert BiasClassifier().load_model(tiny_run_dir).training_languages == ["en"]


def test_warn_labels_a_german_sentence_and_flags_it(english_model, caplog):
    german, english = BiasClassifier().load_model(english_model).predict_with_confidence(
        [GERMAN, ENGLISH])
    assert german["status"] == "ok" and german["label"] is not None
    assert german["language"] == "de" and german["language_confidence"] > 0.9
    assert german["supported_language"] is False
    assert english["language"] == "en" and english["supported_language"] is True
    assert "1 of 2 input(s) are in a language the model was not trained on (de 1; trained on " \
           "en): their labels are unreliable" in caplog.text


def test_abstain_gives_no_label_and_says_why(english_model):
    classifier = BiasClassifier(language_policy="abstain").load_model(english_model)
    german, english = classifier.predict_with_confidence([GERMAN, ENGLISH])
    assert german["status"] == "abstained" and german["label"] is None
    assert german["probabilities"] is None
    assert "not trained on (de, detector confidence" in german["reason"]
    assert "trained on en" in german["reason"]
    assert english["status"] == "ok" and english["label"] is not None
    assert classifier.predict([GERMAN]) == [None]


def test_off_reports_the_language_and_flags_nothing(english_model):
    result = BiasClassifier(language_policy="off").load_model(
        english_model).predict_with_confidence(GERMAN)
    assert result["status"] == "ok" and result["language"] == "de"
    assert "supported_language" not in result


def test_an_article_carries_its_language_and_each_sentence_its_own(english_model):
    article = {"id": "a-1", "text": " ".join(NEWS_BY_LANGUAGE["en"][:3]
                                             + NEWS_BY_LANGUAGE["de"][:2])}
    result = BiasClassifier().load_model(english_model).predict_with_confidence(article)
    assert result["language"] == "en" and result["supported_language"] is True
    assert [sentence["language"] for sentence in result["sentences"]] == ["en"] * 3 + ["de"] * 2
    assert [sentence["supported_language"] for sentence in result["sentences"]] == \
        [True] * 3 + [False] * 2
    assert result["languages"] == {"en": 0.6, "de": 0.4}


def test_abstain_leaves_the_foreign_sentences_of_an_article_out_of_its_label(english_model):
    article = {"id": "a-2", "title": NEWS_BY_LANGUAGE["en"][4],
               "text": " ".join([NEWS_BY_LANGUAGE["en"][5], NEWS_BY_LANGUAGE["de"][0],
                                 NEWS_BY_LANGUAGE["en"][6], NEWS_BY_LANGUAGE["de"][1]])}
    result = BiasClassifier(language_policy="abstain").load_model(
        english_model).predict_with_confidence(article)
    assert result["status"] == "ok" and result["language"] == "en"
    assert result["num_sentences"] == 5 and result["abstained_sentences"] == 2
    german = [sentence for sentence in result["sentences"] if sentence["language"] == "de"]
    assert [sentence["index"] for sentence in german] == [2, 4]
    assert all(sentence["status"] == "abstained" and sentence["label"] is None
               and sentence["probabilities"] is None for sentence in german)
    english = [sentence for sentence in result["sentences"] if sentence["language"] == "en"]
    assert len(english) == 3 and result["summary"]["num_sentences"] == 3
    for label, probability in result["probabilities"].items():
        assert probability == pytest.approx(
            sum(sentence["probabilities"][label] for sentence in english) / 3)


def test_a_model_without_recorded_languages_flags_nothing(tmp_path, caplog):
    model_dir = make_tiny_model_dir(tmp_path / "older_model")
    classifier = BiasClassifier(language_policy="abstain").load_model(model_dir)
    assert "records no training languages" in caplog.text
    assert classifier.training_languages is None
    result = classifier.predict_with_confidence(GERMAN)
    assert result["status"] == "ok" and result["language"] == "de"
    assert result["supported_language"] is None


def test_predict_command_flags_or_abstains_as_asked(english_model, tmp_path, capsys):
    inputs = tmp_path / "news.txt"
    inputs.write_text(f"{GERMAN}\n{ENGLISH}\n", encoding="utf-8")
    for policy, german_status in (("warn", "ok"), ("abstain", "abstained")):
        output = tmp_path / f"{policy}.jsonl"
        assert main(["predict", str(english_model), "--input", str(inputs), "--output",
                     str(output), "--language-policy", policy]) == 0
        german, english = [json.loads(line) for line in output.read_text("utf-8").splitlines()]
        assert german["status"] == german_status and german["supported_language"] is False
        assert (german["label"] is None) == (policy == "abstain")
        assert english["status"] == "ok" and english["supported_language"] is True
        captured = capsys.readouterr()
        assert "trained on languages: en" in captured.err
        assert "1 input(s) in languages the model was not trained on (de 1): " in captured.out
    assert "abstained: 1" in captured.out and "de 1): left without a label." in captured.out
    with pytest.raises(SystemExit) as refused:
        main(["predict", str(english_model), "--input", str(inputs), "--output",
              str(tmp_path / "x.jsonl"), "--language-policy", "refuse"])
    assert refused.value.code == 2
    assert "--language-policy: invalid choice: 'refuse'" in capsys.readouterr().err


@pytest.mark.parametrize("policy", ["warn", "abstain"])
def test_the_server_applies_the_policy_and_says_it_in_model(english_model, tmp_path, policy):
    classifier = BiasClassifier(language_policy=policy).load_model(english_model)
    app = create_app(ServedModel("production", "english_run", classifier),
                     log_dir=tmp_path / "log")
    _identifier.cache_clear()
    with BackgroundServer(app) as server:
        assert _identifier.cache_info().currsize == 1  # loaded at start-up, not by a request
        described = httpx.get(f"{server.url}/model").json()
        answers = httpx.post(f"{server.url}/predict", json={"texts": [GERMAN, ENGLISH]},
                             timeout=60).json()
        stored = httpx.post(f"{server.url}/feedback",
                            json={"text": GERMAN, "label": "Biased"}).json()
    assert described["language_policy"] == policy
    assert described["versions"]["production"]["languages"]["trained_on"] == ["en"]
    german, english = answers
    assert german["language"] == "de" and german["supported_language"] is False
    assert (german["status"], german["label"] is None) == (
        ("abstained", True) if policy == "abstain" else ("ok", False))
    assert english["supported_language"] is True and english["label"] is not None
    assert stored["status"] == "stored" and stored["language"] == "de"
    assert stored["supported_language"] is False  # retrain will leave it out unless asked
    logged = {record["language"]: record for record in read_predictions(tmp_path / "log")}
    assert logged["de"]["supported_language"] is False
    assert logged["de"]["status"] == german["status"]
