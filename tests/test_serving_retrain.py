"""What ``retrain`` trains on: previous data, new files and feedback, never production's
test set."""

from __future__ import annotations

import csv
import json

import pytest

from backend.ml.cli import main
from backend.ml.config import ExperimentConfig
from backend.ml.data.preprocessing import sentence_key
from backend.ml.data.splits import prepare_splits
from backend.ml.errors import DataError
from backend.ml.serving.retrain import build_training_rows
from support.configs import tiny_config
from support.multilingual_news import NEWS_BY_LANGUAGE


@pytest.fixture
def config():
    return ExperimentConfig.from_dict(tiny_config(data={"preprocessing": "lowercase"}))


def test_training_rows_hold_out_the_test_split_and_let_feedback_relabel(config, tmp_path):
    splits = prepare_splits(config.data, config.seed)
    relabelled = splits.train.texts[0]
    old_label = splits.label_names[splits.train.labels[0]]
    new_label = "Biased" if old_label != "Biased" else "Non-biased"
    new_file = tmp_path / "new.csv"
    new_file.write_text("text;label_bias;outlet\nA Brand New Sentence.;Non-biased;Wire\n"
                        f"{splits.test.texts[0]};Biased;Wire\n", encoding="utf-8")
    feedback = [{"key": "id:a-1", "text": "Readers Say This Is Slanted.", "label": "Biased"},
                {"key": "id:a-2", "text": relabelled, "label": old_label},
                {"key": "id:a-2", "text": relabelled, "label": new_label},  # newest wins
                {"key": "id:a-3", "text": None, "label": "Biased"}]
    rows, counts, _ = build_training_rows(config, feedback, [new_file], set(splits.test.texts))
    by_text = {row["text"]: row for row in rows}
    assert not set(splits.test.texts) & set(by_text)
    assert by_text[relabelled]["label_bias"] == new_label
    assert by_text[relabelled]["origin"] == "feedback"
    assert by_text["readers say this is slanted."]["origin"] == "feedback"  # preprocessed
    assert by_text["a brand new sentence."]["origin"] == "file:new.csv"
    assert counts == {"feedback_without_text": 1, "held_out_test_sentences_removed": 1,
                      "other_language_left_out": 0,
                      "previous_train": len(splits.train) - 1,
                      "previous_validation": len(splits.validation), "file": 1, "feedback": 2}


def test_a_test_sentence_retyped_in_feedback_is_still_held_out_and_a_retyped_relabel_replaces(
        tmp_path):
    config = ExperimentConfig.from_dict(tiny_config())  # preprocessing none: text as typed
    splits = prepare_splits(config.data, config.seed)
    tested, trained = splits.test.texts[0], splits.train.texts[0]
    new_label = "Biased" if splits.label_names[splits.train.labels[0]] != "Biased" else "Non-biased"
    feedback = [
        {"key": "id:b-1", "text": "  " + tested.upper().replace("'", "\u2019").replace(" ", "  "),
         "label": "Biased"},
        {"key": "id:b-2", "text": trained.replace("'", "\u2019").lower() + " ", "label": new_label}]
    rows, counts, _ = build_training_rows(config, feedback, [], set(splits.test.texts))
    keys = [sentence_key(row["text"]) for row in rows]
    assert sentence_key(tested) not in keys and len(keys) == len(set(keys))
    assert counts["held_out_test_sentences_removed"] == 1 and counts["feedback"] == 1
    relabel = [row for row in rows if sentence_key(row["text"]) == sentence_key(trained)]
    assert [(row["label_bias"], row["origin"]) for row in relabel] == [(new_label, "feedback")]


def test_retrain_mistakes_are_plain_errors(config, tmp_path, capsys):
    bad_file = tmp_path / "labels.csv"
    bad_file.write_text("sentence;label\nSomething.;Biased\n", encoding="utf-8")
    with pytest.raises(DataError, match="labels.csv.*label_bias"):
        build_training_rows(config, [], [bad_file], set())
    common = ["--runs-dir", str(tmp_path / "runs"), "--registry-dir", str(tmp_path / "reg"),
              "--log-dir", str(tmp_path / "log")]
    assert main(["retrain", *common]) == 1
    assert "no production model in" in capsys.readouterr().err
    assert main(["retrain", "tiny_missing", *common]) == 1
    assert "No run or model named 'tiny_missing'" in capsys.readouterr().err


GERMAN_FEEDBACK = [{"key": f"id:de-{number}", "text": text, "label": "Biased"}
                   for number, text in enumerate(NEWS_BY_LANGUAGE["de"][:2])]
ENGLISH_FEEDBACK = [{"key": "id:en-1", "text": NEWS_BY_LANGUAGE["en"][0], "label": "Non-biased"}]


def test_feedback_in_a_language_the_model_never_read_is_left_out_unless_included(config):
    feedback = GERMAN_FEEDBACK + ENGLISH_FEEDBACK
    rows, counts, report = build_training_rows(config, feedback, [], set(), ["en"])
    origins = {row["text"]: row["origin"] for row in rows}
    assert NEWS_BY_LANGUAGE["en"][0].lower() in origins
    assert not any(text.lower() in origins for text in NEWS_BY_LANGUAGE["de"])
    assert counts["feedback"] == 1 and counts["other_language_left_out"] == 2
    assert report == {"model_languages": ["en"], "included": [],
                      "left_out": {"feedback": {"de": 2}}}
    rows, counts, report = build_training_rows(config, feedback, [], set(), ["en"], ["de"])
    assert counts["feedback"] == 3 and report["left_out"] == {}
    # A production model without recorded languages: those of its rebuilt training data.
    _, _, report = build_training_rows(config, feedback, [], set(), None)
    assert report["model_languages"] == ["en"] and report["left_out"] == {"feedback": {"de": 2}}


def test_include_languages_needs_a_multilingual_encoder_and_real_codes(tiny_run_dir, tmp_path,
                                                                       capsys):
    common = ["--runs-dir", str(tiny_run_dir.parent), "--registry-dir", str(tmp_path / "reg"),
              "--log-dir", str(tmp_path / "log")]
    assert main(["retrain", tiny_run_dir.name, "--include-languages", "de,fr", *common]) == 1
    error = capsys.readouterr().err
    assert "--include-languages de,fr:" in error and "pretrained on English" in error
    assert "xlmr_multilingual.yaml" in error
    assert main(["retrain", tiny_run_dir.name, "--include-languages", "de,xx", *common]) == 1
    assert "--include-languages: xx is not a language code" in capsys.readouterr().err
    assert [run.name for run in tiny_run_dir.parent.iterdir()] == [tiny_run_dir.name]


@pytest.mark.slow
def test_retrain_with_german_feedback_leaves_it_out_and_says_so(tiny_run_dir, tmp_path, capsys):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / "feedback.jsonl").write_text("".join(
        json.dumps(record) + "\n" for record in GERMAN_FEEDBACK + ENGLISH_FEEDBACK), "utf-8")
    assert main(["retrain", tiny_run_dir.name, "--runs-dir", str(tiny_run_dir.parent),
                 "--registry-dir", str(tmp_path / "reg"), "--log-dir", str(log_dir),
                 "--output-dir", str(tmp_path / "runs"), "--run-id", "tiny_en_only",
                 "--no-register"]) == 0
    assert ("Left out 2 new labelled row(s) in languages the production model was not trained "
            "on (de 2; it reads en). To learn from them, retrain a multilingual model with "
            "--include-languages de.") in capsys.readouterr().out
    record = json.loads((tmp_path / "runs" / "tiny_en_only" / "retrain.json").read_text("utf-8"))
    assert record["languages"]["left_out"] == {"feedback": {"de": 2}}
    with open(record["training_data"], encoding="utf-8", newline="") as stream:
        trained = {row["text"] for row in csv.DictReader(stream, delimiter=";")}
    assert NEWS_BY_LANGUAGE["en"][0] in trained
    assert not trained & set(NEWS_BY_LANGUAGE["de"])
