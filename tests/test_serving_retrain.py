"""What ``retrain`` trains on: previous data, new files and feedback, never production's
test set."""

from __future__ import annotations

import pytest

from backend.ml.cli import main
from backend.ml.config import ExperimentConfig
from backend.ml.data.splits import prepare_splits
from backend.ml.errors import DataError
from backend.ml.serving.retrain import build_training_rows
from support.configs import tiny_config


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
    rows, counts = build_training_rows(config, feedback, [new_file], set(splits.test.texts))
    by_text = {row["text"]: row for row in rows}
    assert not set(splits.test.texts) & set(by_text)
    assert by_text[relabelled]["label_bias"] == new_label
    assert by_text[relabelled]["origin"] == "feedback"
    assert by_text["readers say this is slanted."]["origin"] == "feedback"  # preprocessed
    assert by_text["a brand new sentence."]["origin"] == "file:new.csv"
    assert counts == {"feedback_without_text": 1, "held_out_test_sentences_removed": 1,
                      "previous_train": len(splits.train) - 1,
                      "previous_validation": len(splits.validation), "file": 1, "feedback": 2}


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
