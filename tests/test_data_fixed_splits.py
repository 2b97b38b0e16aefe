"""Training on one file, selecting on a second and reporting on a third (data.*_path)."""

from __future__ import annotations

import ast

import pandas as pd
import pytest

from backend.ml.config import DataConfig, ExperimentConfig
from backend.ml.data import prepare_splits
from backend.ml.data.loading import DEMO_FILE
from support.configs import tiny_config


def write_babe_csv(frame: pd.DataFrame, path) -> str:
    """The published format: ';'-separated, UTF-8 with a BOM."""
    frame.to_csv(path, sep=";", index=False, encoding="utf-8-sig")
    return str(path)


@pytest.fixture
def demo_files(tmp_path):
    frame = pd.read_csv(DEMO_FILE, sep=";", encoding="utf-8-sig")
    return {"train": write_babe_csv(frame.iloc[:300], tmp_path / "train.csv"),
            "validation": write_babe_csv(frame.iloc[300:350], tmp_path / "validation.csv"),
            # 10 sentences of the training file reappear in the test file
            "test": write_babe_csv(pd.concat([frame.iloc[350:], frame.iloc[:10]]),
                                   tmp_path / "test.csv"),
            "frame": frame}


def test_fixed_validation_and_test_files_are_used_whole_and_overlap_leaves_training(demo_files):
    frame = demo_files["frame"]
    splits = prepare_splits(DataConfig(dataset="babe", path=demo_files["train"],
                                       validation_path=demo_files["validation"],
                                       test_path=demo_files["test"]), seed=1)
    assert splits.validation.texts == list(frame["text"].iloc[300:350])
    assert splits.test.texts == list(frame["text"].iloc[350:]) + list(frame["text"].iloc[:10])
    assert len(splits.train) == 290 and not set(splits.train.texts) & set(splits.test.texts)
    assert splits.counts["overlap_removed_from_train"] == 10
    assert "validation: " in splits.source and "test: " in splits.source
    assert splits.summary()["splits"]["validation"]["size"] == 50


def test_a_test_sentence_in_training_with_other_quotes_case_or_spacing_still_leaves_training(
        tmp_path):
    frame = pd.read_csv(DEMO_FILE, sep=";", encoding="utf-8-sig")
    originals = frame[frame["text"].str.contains("'")].iloc[:3]
    variants = originals.copy()  # the same three sentences, as another outlet typed them
    variants["text"] = [
        "  " + originals["text"].iloc[0].upper(),
        originals["text"].iloc[1].replace(" ", "\u00a0 \t", 2),
        originals["text"].iloc[2].replace("'", "\u2019") + " ",
    ]
    rest = frame.drop(index=originals.index).iloc[:300]
    train = write_babe_csv(pd.concat([rest, variants]), tmp_path / "train.csv")
    test = write_babe_csv(originals, tmp_path / "test.csv")
    splits = prepare_splits(DataConfig(dataset="babe", path=train, test_path=test,
                                       validation_split=0.1), seed=1)
    assert splits.counts["overlap_removed_from_train"] == 3
    assert not set(splits.train.texts + splits.validation.texts) & set(variants["text"])


def test_only_a_test_file_draws_validation_from_the_training_file(demo_files):
    splits = prepare_splits(DataConfig(dataset="babe", path=demo_files["train"],
                                       test_path=demo_files["test"], train_split=0.8,
                                       validation_split=0.1), seed=1)
    assert len(splits.test) == 60 and len(splits.validation) == 32  # 290 * 0.1 / 0.9, rounded
    assert len(splits.train) == 290 - 32


def test_biased_words_travel_with_their_sentences(demo_files):
    splits = prepare_splits(DataConfig(dataset="demo"), seed=3)
    frame = demo_files["frame"].set_index("text")
    for text, words in zip(splits.train.texts[:50], splits.train.biased_words[:50]):
        assert words == [word.lower() for word in ast.literal_eval(frame.loc[text, "biased_words"])]


def test_missing_fixed_file_and_cv_with_fixed_files_are_config_errors(tmp_path):
    problems = ExperimentConfig.from_dict(
        tiny_config(data={"test_path": str(tmp_path / "nope.csv"), "cv_folds": 5}),
        validate=False).validate()
    assert any(problem.startswith(f"data.test_path: {tmp_path / 'nope.csv'} does not exist")
               for problem in problems)
    assert any(problem.startswith("data.cv_folds: cross-validation draws its own") for problem
               in problems)


def test_sg1_as_test_file_removes_the_overlap_from_sg2_training(babe_dir):
    splits = prepare_splits(DataConfig(dataset="babe",
                                       path=str(babe_dir / "final_labels_SG2_dev.csv"),
                                       test_path=str(babe_dir / "final_labels_SG1.csv"),
                                       filter_no_agreement=True), seed=42)
    normalised = {" ".join(text.lower().split()) for text in splits.test.texts}
    assert not any(" ".join(text.lower().split()) in normalised for text in splits.train.texts)
    assert splits.counts["overlap_removed_from_train"] > 1000  # SG1 sits almost wholly in SG2
