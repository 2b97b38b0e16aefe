"""The data layer: BABE and demo loading, bad-data errors, preprocessing, splits, CV folds and
tokenised batches. Tests that need the real BABE files skip when ../shared/data/babe is absent
(BABE_DATA_DIR points elsewhere)."""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path

# `datasets` is imported before any test sets HF_HUB_OFFLINE: the offline tests then cover the
# harder case (offline requested after import) and leave the process's hub settings unchanged.
import datasets  # noqa: F401
import pandas as pd
import pytest
import torch

from backend.ml.config import DataConfig
from backend.ml.data import (
    LABEL_NAMES,
    DataSplits,
    SplitData,
    TokenizedDataset,
    label_names_for,
    load_sentences,
    loading,
    make_collator,
    prepare_cv_folds,
    prepare_splits,
    preprocess_text,
)
from backend.ml.data.loading import DEMO_FILE
from backend.ml.errors import DataError, UserError

BABE_COLUMNS = ["text", "news_link", "outlet", "topic", "type", "label_bias", "label_opinion",
                "biased_words"]


# ------------------------------------------------------------------------------ helpers

def babe_row(text: str, label: str = "Non-biased", outlet: str = "Town Crier",
             type_: str = "center") -> dict:
    return {"text": text, "news_link": "https://news.example/a", "outlet": outlet,
            "topic": "budget", "type": type_, "label_bias": label,
            "label_opinion": "Entirely factual", "biased_words": "[]"}


def write_csv(path: Path, rows: list[dict], columns=BABE_COLUMNS) -> Path:
    pd.DataFrame(rows, columns=columns).to_csv(path, sep=";", index=False, encoding="utf-8-sig",
                                                lineterminator="\n")
    return path


def small_rows(count: int = 6) -> list[dict]:
    labels = ["Non-biased", "Biased", "No agreement"]
    return [babe_row(f"Council sentence number {index} on the road budget.",
                     labels[index % 3]) for index in range(count)]


def identities(split: SplitData) -> list[int]:
    return [item["source_row"] for item in split.metadata]


def label_shares(labels: list[int], classes: int = 3) -> list[float]:
    counts = Counter(labels)
    return [counts[label] / len(labels) for label in range(classes)]


@pytest.fixture(scope="module")
def demo_config() -> DataConfig:
    return DataConfig(dataset="demo")


@pytest.fixture(scope="module")
def demo_splits(demo_config) -> DataSplits:
    return prepare_splits(demo_config, seed=42)


# ------------------------------------------------------------------------------ labels

def test_label_order_is_fixed_and_binary_keeps_the_first_two_ids():
    assert LABEL_NAMES == ["Non-biased", "Biased", "No agreement"]
    assert label_names_for(False) == LABEL_NAMES
    assert label_names_for(True) == ["Non-biased", "Biased"]


# ------------------------------------------------------------------------------ real BABE

def test_babe_sg1_csv_matches_the_published_counts(babe_dir):
    frame = load_sentences(DataConfig(path=str(babe_dir / "final_labels_SG1.csv")))
    assert len(frame) == 1700
    assert list(frame.columns) == ["text", "label", "outlet", "topic", "type", "news_link",
                                   "biased_words", "source_row"]
    assert frame["label"].value_counts().to_dict() == {"Non-biased": 800, "Biased": 746,
                                                       "No agreement": 154}
    assert frame["source_row"].tolist() == list(range(2, 1702))  # header is row 1
    assert frame.attrs["source"].endswith("final_labels_SG1.csv")
    assert set(frame["type"]) == {"left", "right", "center"}


def test_babe_csv_and_xlsx_give_the_same_sentences_and_labels(babe_dir):
    from_csv = load_sentences(DataConfig(path=str(babe_dir / "final_labels_SG1.csv")))
    from_xlsx = load_sentences(DataConfig(path=str(babe_dir / "final_labels_SG1.xlsx")))
    assert from_xlsx["text"].tolist() == from_csv["text"].tolist()
    assert from_xlsx["label"].tolist() == from_csv["label"].tolist()
    assert from_xlsx["source_row"].tolist() == from_csv["source_row"].tolist()


def test_babe_directory_picks_the_file_for_the_subset(babe_dir):
    sg1 = load_sentences(DataConfig(path=str(babe_dir), subset="SG1"))
    sg2 = load_sentences(DataConfig(path=str(babe_dir), subset="SG2"))
    assert Path(sg1.attrs["source"]).name == "final_labels_SG1.csv"  # csv preferred over xlsx
    assert Path(sg2.attrs["source"]).name == "final_labels_SG2_dev.csv"
    assert len(sg1) == 1700 and len(sg2) == 2974
    assert set(sg2["label"]) == set(LABEL_NAMES)


def test_babe_sg2_missing_types_are_derived_from_the_outlet(babe_dir):
    frame = load_sentences(DataConfig(path=str(babe_dir), subset="SG2"))
    assert frame.attrs["types_derived"] > 500
    typed_outlets = set(frame.loc[frame["type"] != "", "outlet"])
    still_empty = frame[frame["type"] == ""]
    assert not set(still_empty["outlet"]) & typed_outlets  # only outlets never typed stay empty
    assert (frame.loc[frame["outlet"] == "Reuters", "type"] == "center").all()


def test_babe_sg2_single_no_agreement_sentence_still_splits(monkeypatch, babe_dir):
    config = DataConfig(path=str(babe_dir), subset="SG2")
    splits = prepare_splits(config, seed=42)
    total = {name: sum(split.label_counts(splits.label_names)[name]
                       for split in (splits.train, splits.validation, splits.test))
             for name in splits.label_names}
    assert total == {"Non-biased": 1513, "Biased": 1460, "No agreement": 1}
    binary = prepare_cv_folds(DataConfig(path=str(babe_dir), subset="SG2", cv_folds=5,
                                         filter_no_agreement=True), seed=42)
    assert sum(len(fold.test) for fold in binary) == 2973
    assert binary[0].counts["removed_no_agreement"] == 1


def test_demo_sentences_do_not_repeat_babe_sentences(demo_config, babe_dir):
    def normal(text):
        return " ".join(str(text).replace("\u2019", "'").casefold().split())
    demo = set(load_sentences(demo_config)["text"].map(normal))
    for subset in ("SG1", "SG2"):
        babe = load_sentences(DataConfig(path=str(babe_dir), subset=subset))["text"]
        assert not demo & set(babe.map(normal))


# ------------------------------------------------------------------------------ sources

def test_directory_prefers_exact_name_then_csv(tmp_path):
    write_csv(tmp_path / "final_labels_SG2_dev.csv", small_rows(3))
    pd.DataFrame(small_rows(6), columns=BABE_COLUMNS).to_excel(tmp_path / "final_labels_SG2.xlsx",
                                                               index=False)
    write_csv(tmp_path / "final_labels_SG1.csv", small_rows(4))
    frame = load_sentences(DataConfig(path=str(tmp_path), subset="SG2"))
    assert Path(frame.attrs["source"]).name == "final_labels_SG2.xlsx" and len(frame) == 6
    write_csv(tmp_path / "final_labels_SG2.csv", small_rows(5))
    frame = load_sentences(DataConfig(path=str(tmp_path), subset="SG2"))
    assert Path(frame.attrs["source"]).name == "final_labels_SG2.csv" and len(frame) == 5
    assert len(load_sentences(DataConfig(path=str(tmp_path), subset="SG1"))) == 4


def test_directory_without_the_subset_file_lists_what_is_there(tmp_path):
    write_csv(tmp_path / "final_labels_SG1.csv", small_rows(3))
    with pytest.raises(DataError) as caught:
        load_sentences(DataConfig(path=str(tmp_path), subset="SG2"))
    message = str(caught.value)
    assert str(tmp_path) in message and "final_labels_SG2" in message
    assert "final_labels_SG1.csv" in message and "data.subset" in message


def test_empty_path_reads_babe_data_dir(tmp_path, monkeypatch):
    write_csv(tmp_path / "final_labels_SG2.csv", small_rows(6))
    monkeypatch.setenv("BABE_DATA_DIR", str(tmp_path))
    frame = load_sentences(DataConfig(path=None, subset="SG2"))
    assert len(frame) == 6 and str(tmp_path) in frame.attrs["source"]


def test_babe_data_dir_that_does_not_exist_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("BABE_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="BABE_DATA_DIR.*nowhere.*not found"):
        load_sentences(DataConfig(path=""))


# A hub id that no cache holds, so the outcome does not depend on what this machine downloaded.
UNCACHED_HUB_ID = "no-such-owner-4f1c/no-such-babe-copy"


def test_hub_id_fails_fast_offline_with_a_fix(monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as caught:
        load_sentences(DataConfig(path=UNCACHED_HUB_ID))
    message = str(caught.value)
    assert UNCACHED_HUB_ID in message and "offline" in message
    assert "data.path" in message and "BABE_DATA_DIR" in message
    assert no_network == []


def test_no_path_and_no_env_goes_to_the_hub_and_explains(monkeypatch, no_network):
    monkeypatch.delenv("BABE_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(loading, "BABE_HUB_ID", UNCACHED_HUB_ID)
    with pytest.raises(DataError) as caught:
        load_sentences(DataConfig(path=None))
    assert UNCACHED_HUB_ID in str(caught.value)
    assert "neither data.path nor BABE_DATA_DIR is set" in str(caught.value)
    assert no_network == []


def test_unreachable_hub_fails_within_one_connection_attempt(monkeypatch, no_network):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY",
                 "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as probe:  # a local port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(DataError) as caught:
        load_sentences(DataConfig(path="someone/some-dataset"))
    message = str(caught.value)
    assert "not reachable" in message and f"127.0.0.1:{port}" in message
    assert "BABE_DATA_DIR" in message
    assert no_network == []


def test_local_looking_path_that_does_not_exist_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_sentences(DataConfig(path=str(tmp_path / "final_labels_SG2.csv")))
    with pytest.raises(DataError, match="not found"):
        load_sentences(DataConfig(path="./data/babe"))


# ------------------------------------------------------------------------------ bad data

def test_missing_column_lists_found_and_expected(tmp_path):
    path = write_csv(tmp_path / "final_labels_SG2.csv", small_rows(3),
                     columns=[c for c in BABE_COLUMNS if c != "label_bias"])
    with pytest.raises(DataError) as caught:
        load_sentences(DataConfig(path=str(path)))
    message = str(caught.value)
    assert str(path) in message and "missing column(s) label_bias" in message
    assert "Found columns: text, news_link, outlet, topic, type, label_opinion" in message
    assert "Expected: text, label_bias" in message
    assert caught.value.__cause__ is None  # no pandas traceback chained in


def test_comma_separated_csv_gets_a_separator_hint(tmp_path):
    path = tmp_path / "final_labels_SG2.csv"
    pd.DataFrame(small_rows(3), columns=BABE_COLUMNS).to_csv(path, index=False)
    with pytest.raises(DataError, match="';'-separated"):
        load_sentences(DataConfig(path=str(path)))


def test_empty_text_names_the_rows(tmp_path):
    rows = small_rows(6)
    rows[1]["text"] = ""
    rows[3]["text"] = "   "
    path = write_csv(tmp_path / "final_labels_SG2.csv", rows)
    with pytest.raises(DataError) as caught:
        load_sentences(DataConfig(path=str(path)))
    message = str(caught.value)
    assert str(path) in message and "empty text in 2 row(s): 3, 5" in message


def test_unknown_label_names_row_value_and_valid_labels(tmp_path):
    rows = small_rows(6)
    rows[2]["label_bias"] = "Biassed"
    path = write_csv(tmp_path / "final_labels_SG2.csv", rows)
    with pytest.raises(DataError) as caught:
        load_sentences(DataConfig(path=str(path)))
    message = str(caught.value)
    assert str(path) in message and "row 4: 'Biassed'" in message
    assert "Valid labels: Non-biased, Biased, No agreement" in message


def test_all_problems_of_a_file_are_reported_together(tmp_path):
    rows = small_rows(6)
    rows[0]["text"] = ""
    rows[5]["label_bias"] = "maybe"
    path = write_csv(tmp_path / "final_labels_SG2.csv", rows)
    with pytest.raises(DataError, match=r"2 problem\(s\)") as caught:
        load_sentences(DataConfig(path=str(path)))
    assert "empty text in 1 row(s): 2" in str(caught.value)
    assert "row 7: 'maybe'" in str(caught.value)


def test_labels_tolerate_case_and_spaces(tmp_path):
    rows = small_rows(3)
    rows[0]["label_bias"] = " biased "
    rows[1]["label_bias"] = "NON-BIASED"
    frame = load_sentences(DataConfig(path=str(write_csv(tmp_path / "f.csv", rows))))
    assert frame["label"].tolist()[:2] == ["Biased", "Non-biased"]


def test_corrupt_xlsx_is_a_clear_error(tmp_path):
    path = tmp_path / "final_labels_SG1.xlsx"
    path.write_bytes(b"PK\x03\x04 this is not really a workbook \x00\xff\xfe" * 20)
    with pytest.raises(DataError) as caught:
        load_sentences(DataConfig(path=str(path)))
    assert str(path) in str(caught.value)
    assert "cannot read as an Excel workbook" in str(caught.value)
    assert caught.value.__cause__ is None


def test_non_utf8_csv_is_a_clear_error(tmp_path):
    path = tmp_path / "final_labels_SG1.csv"
    path.write_bytes("text;label_bias\nCaf\u00e9 owners \u2013 wait;Biased\n".encode("cp1252"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_sentences(DataConfig(path=str(path)))


def test_missing_file_and_unsupported_type(tmp_path):
    with pytest.raises(DataError, match="final_labels_SG1.csv: file or directory not found"):
        load_sentences(DataConfig(path=str(tmp_path / "final_labels_SG1.csv")))
    other = tmp_path / "labels.json"
    other.write_text("{}")
    with pytest.raises(UserError, match="unsupported file type '.json'"):
        load_sentences(DataConfig(path=str(other)))


def test_blank_rows_are_skipped_and_counted_keeping_row_numbers(tmp_path):
    path = tmp_path / "final_labels_SG2.csv"
    write_csv(path, small_rows(2))
    text = path.read_text(encoding="utf-8-sig")
    first, second, third = text.rstrip("\n").split("\n")
    path.write_text("\ufeff" + "\n".join([first, second, "", third]) + "\n", encoding="utf-8")
    frame = load_sentences(DataConfig(path=str(path)))
    assert frame["source_row"].tolist() == [2, 4]
    assert frame.attrs["blank_rows_skipped"] == 1


def test_duplicates_are_kept_and_counted(tmp_path):
    rows = small_rows(4) + [small_rows(1)[0]]
    frame = load_sentences(DataConfig(path=str(write_csv(tmp_path / "f.csv", rows))))
    assert len(frame) == 5 and frame.attrs["duplicate_texts"] == 1


def test_empty_type_is_derived_only_from_an_unambiguous_outlet(tmp_path):
    rows = [babe_row("One report.", outlet="Fox News", type_="right"),
            babe_row("Two report.", outlet="fox-news", type_=""),
            babe_row("Three report.", outlet="Mixed Post", type_="left"),
            babe_row("Four report.", outlet="Mixed Post", type_="right"),
            babe_row("Five report.", outlet="Mixed Post", type_=""),
            babe_row("Six report.", outlet="Unknown Daily", type_="")]
    frame = load_sentences(DataConfig(path=str(write_csv(tmp_path / "f.csv", rows))))
    assert frame["type"].tolist() == ["right", "right", "left", "right", "", ""]
    assert frame.attrs["types_derived"] == 1


# ------------------------------------------------------------------------------ demo dataset

def test_demo_file_is_in_babe_csv_format():
    raw = DEMO_FILE.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf" + ";".join(BABE_COLUMNS).encode() + b"\n")
    frame = pd.read_csv(DEMO_FILE, sep=";", encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert list(frame.columns) == BABE_COLUMNS
    biased = frame[frame["label_bias"] == "Biased"]
    assert (biased["biased_words"].str.len() > 2).all()  # every Biased row names its words
    assert (frame.loc[frame["label_bias"] != "Biased", "biased_words"] == "[]").all()


def test_demo_loads_with_the_intended_label_mix(demo_config):
    frame = load_sentences(demo_config)
    assert 360 <= len(frame) <= 450
    shares = frame["label"].value_counts(normalize=True)
    assert 0.40 <= shares["Biased"] <= 0.50
    assert 0.35 <= shares["Non-biased"] <= 0.45
    assert 0.10 <= shares["No agreement"] <= 0.20
    assert not frame["text"].duplicated().any()
    assert frame["topic"].nunique() >= 6
    assert set(frame["type"]) == {"left", "right", "center"}  # blanks derived from the outlet
    assert "demo" in frame.attrs["source"]


# ------------------------------------------------------------------------------ preprocessing

def test_preprocessing_none_keeps_the_sentence_exactly():
    text = "  The \u201cplan\u201d  costs\tmore.  "
    assert preprocess_text(text, "none") == text


def test_preprocessing_lowercase_only_lowercases():
    text = "  The SENATE\u2019s  Vote "
    assert preprocess_text(text, "lowercase") == "  the senate\u2019s  vote "


def test_preprocessing_clean():
    text = ("  The mayor\u2019s \u201cplan\u201d\n\tis online at https://city.example/plan?id=4. "
            "See also www.example.org/x,\u00a0please\u2018  ")
    assert preprocess_text(text, "clean") == (
        "The mayor's \"plan\" is online at [URL]. See also [URL], please'")


def test_unknown_preprocessing_mode_lists_the_modes():
    with pytest.raises(ValueError, match="none, lowercase, clean"):
        preprocess_text("text", "stem")


def test_prepare_splits_applies_preprocessing():
    splits = prepare_splits(DataConfig(dataset="demo", preprocessing="clean"), seed=1)
    texts = splits.train.texts + splits.validation.texts + splits.test.texts
    raw = load_sentences(DataConfig(dataset="demo"))["text"]
    assert raw.str.contains("\u2019").any()  # the demo has typographic apostrophes ...
    assert not any("\u2019" in text for text in texts)  # ... which clean straightens
    lower = prepare_splits(DataConfig(dataset="demo", preprocessing="lowercase"), seed=1)
    assert all(text == text.lower() for text in lower.train.texts)


# ------------------------------------------------------------------------------ splits

def test_split_sizes_follow_the_config(demo_splits):
    total = len(load_sentences(DataConfig(dataset="demo")))
    assert (len(demo_splits.train), len(demo_splits.validation), len(demo_splits.test)) == (
        round(total * 0.8), round(total * 0.1), total - round(total * 0.8) - round(total * 0.1))


def test_splits_are_stratified(demo_splits):
    everything = demo_splits.train.labels + demo_splits.validation.labels + demo_splits.test.labels
    overall = label_shares(everything)
    for split in (demo_splits.train, demo_splits.validation, demo_splits.test):
        for share, expected in zip(label_shares(split.labels), overall):
            assert abs(share - expected) <= 1 / len(split) + 1e-9


def test_splits_are_disjoint_and_cover_every_sentence(demo_splits):
    train, validation, test = (set(identities(split)) for split in
                               (demo_splits.train, demo_splits.validation, demo_splits.test))
    assert not train & validation and not train & test and not validation & test
    everything = set(load_sentences(DataConfig(dataset="demo"))["source_row"])
    assert train | validation | test == everything


def test_same_seed_same_splits_other_seed_other_splits(demo_config, demo_splits):
    again = prepare_splits(demo_config, seed=42)
    assert again.train.texts == demo_splits.train.texts
    assert again.test.texts == demo_splits.test.texts
    other = prepare_splits(demo_config, seed=7)
    assert set(other.test.texts) != set(demo_splits.test.texts)


def test_metadata_travels_with_each_sentence(demo_splits):
    frame = load_sentences(DataConfig(dataset="demo")).set_index("source_row")
    for text, label, item in list(zip(demo_splits.test.texts, demo_splits.test.labels,
                                      demo_splits.test.metadata))[:10]:
        row = frame.loc[item["source_row"]]
        assert text == row["text"] and LABEL_NAMES[label] == row["label"]
        assert item["outlet"] == row["outlet"] and item["news_link"] == row["news_link"]
        assert set(item) == {"outlet", "topic", "type", "news_link", "source_row"}


def test_filter_no_agreement_makes_a_binary_task(demo_config):
    splits = prepare_splits(DataConfig(dataset="demo", filter_no_agreement=True), seed=42)
    removed = int((load_sentences(demo_config)["label"] == "No agreement").sum())
    assert splits.label_names == ["Non-biased", "Biased"]
    assert {label for split in (splits.train, splits.validation, splits.test)
            for label in split.labels} == {0, 1}
    assert splits.counts["removed_no_agreement"] == removed > 0
    assert list(splits.summary()["splits"]["train"]["label_counts"]) == ["Non-biased", "Biased"]


def test_max_samples_subsamples_with_stratification(demo_config):
    splits = prepare_splits(DataConfig(dataset="demo", max_samples=100), seed=3)
    used = splits.train.labels + splits.validation.labels + splits.test.labels
    assert len(used) == 100 and splits.counts["used"] == 100
    full = load_sentences(demo_config)["label"].map(LABEL_NAMES.index).tolist()
    for share, expected in zip(label_shares(used), label_shares(full)):
        assert abs(share - expected) <= 0.01 + 1e-9
    assert splits.counts["removed_by_max_samples"] == len(full) - 100


def test_too_few_sentences_is_a_data_error(tmp_path):
    path = write_csv(tmp_path / "f.csv", small_rows(2))
    with pytest.raises(DataError, match="too few"):
        prepare_splits(DataConfig(path=str(path)), seed=0)


def test_summary_is_json_ready_and_consistent(demo_splits):
    summary = json.loads(json.dumps(demo_splits.summary()))
    assert summary["dataset"] == "demo" and "demo" in summary["source"]
    assert summary["label_names"] == LABEL_NAMES
    assert set(summary["splits"]) == {"train", "validation", "test"}
    for name, split in (("train", demo_splits.train), ("test", demo_splits.test)):
        entry = summary["splits"][name]
        assert entry["size"] == len(split) == sum(entry["label_counts"].values())
    assert summary["counts"]["used"] == summary["counts"]["loaded"]


# ------------------------------------------------------------------------------ cross-validation

def test_cv_folds_test_on_disjoint_parts_covering_everything(demo_config):
    config = DataConfig(dataset="demo", cv_folds=5)
    folds = prepare_cv_folds(config, seed=42)
    assert [fold.fold for fold in folds] == [1, 2, 3, 4, 5]
    tests = [set(identities(fold.test)) for fold in folds]
    everything = set(load_sentences(demo_config)["source_row"])
    assert set().union(*tests) == everything
    assert sum(len(part) for part in tests) == len(everything)
    share = config.validation_split / (config.train_split + config.validation_split)
    for fold in folds:
        train, validation = set(identities(fold.train)), set(identities(fold.validation))
        assert not train & validation and not (train | validation) & set(identities(fold.test))
        assert train | validation | set(identities(fold.test)) == everything
        assert abs(len(validation) - share * (len(train) + len(validation))) <= 1
        assert fold.summary()["fold"] == fold.fold and fold.summary()["num_folds"] == 5


def test_cv_folds_are_stratified_and_seeded():
    config = DataConfig(dataset="demo", cv_folds=4)
    folds = prepare_cv_folds(config, seed=42)
    overall = label_shares([label for fold in folds for label in fold.test.labels])
    for fold in folds:
        for share, expected in zip(label_shares(fold.test.labels), overall):
            assert abs(share - expected) <= 0.02
    again = prepare_cv_folds(config, seed=42)
    assert [fold.validation.texts for fold in again] == [fold.validation.texts for fold in folds]
    other = prepare_cv_folds(config, seed=5)
    assert set(other[0].test.texts) != set(folds[0].test.texts)


# ------------------------------------------------------------------------------ tokenised batches

@pytest.fixture(scope="module")
def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = load_sentences(DataConfig(dataset="demo"))["text"].tolist()
    backend.train_from_iterator(corpus, trainers.WordLevelTrainer(
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]",
                                   unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")


def test_tokenized_dataset_is_unpadded_and_truncated(tiny_tokenizer):
    split = SplitData(["Short one.", "A somewhat longer sentence about the city budget vote.",
                       " ".join(["word"] * 200)], [0, 1, 2])
    dataset = TokenizedDataset(split, tiny_tokenizer, max_length=32)
    assert len(dataset) == 3
    assert dataset.lengths == [len(dataset[index]["input_ids"]) for index in range(3)]
    assert dataset.lengths[0] < dataset.lengths[1] < dataset.lengths[2] == 32
    pad = tiny_tokenizer.pad_token_id
    for index in range(3):
        item = dataset[index]
        assert set(item) == {"input_ids", "attention_mask", "labels"}
        assert pad not in item["input_ids"] and set(item["attention_mask"]) == {1}
        assert item["labels"] == split.labels[index]


def test_collator_pads_to_the_longest_in_the_batch_only(tiny_tokenizer, demo_splits):
    from torch.utils.data import DataLoader

    dataset = TokenizedDataset(demo_splits.test, tiny_tokenizer, max_length=512)
    loader = DataLoader(dataset, batch_size=8, collate_fn=make_collator(tiny_tokenizer))
    pad = tiny_tokenizer.pad_token_id
    for number, batch in enumerate(loader):
        lengths = dataset.lengths[number * 8:(number + 1) * 8]
        assert tuple(batch["input_ids"].shape) == (len(lengths), max(lengths))
        assert max(lengths) < 512  # padded to the batch, never to max_length
        assert batch["attention_mask"].sum(dim=1).tolist() == lengths
        assert batch["labels"].tolist() == demo_splits.test.labels[number * 8:(number + 1) * 8]
        for row, length in enumerate(lengths):
            assert (batch["input_ids"][row, length:] == pad).all()
            expected = dataset[number * 8 + row]["input_ids"]
            assert batch["input_ids"][row, :length].tolist() == expected
        assert batch["input_ids"].dtype == torch.long


def test_collator_honours_left_padding(tiny_tokenizer):
    split = SplitData(["one two", "one two three four five"], [0, 1])
    dataset = TokenizedDataset(split, tiny_tokenizer, max_length=64)
    tiny_tokenizer.padding_side = "left"
    try:
        batch = make_collator(tiny_tokenizer)([dataset[0], dataset[1]])
    finally:
        tiny_tokenizer.padding_side = "right"
    assert batch["attention_mask"][0].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert batch["input_ids"][0, -4:].tolist() == dataset[0]["input_ids"]


def test_collator_needs_a_padding_token(tiny_tokenizer):
    class NoPad:
        pad_token_id = None
    with pytest.raises(ValueError, match="padding token"):
        make_collator(NoPad())


def test_unlabelled_split_gives_items_without_labels(tiny_tokenizer):
    dataset = TokenizedDataset(SplitData(["one two", "three"], []), tiny_tokenizer, max_length=16)
    batch = make_collator(tiny_tokenizer)([dataset[0], dataset[1]])
    assert "labels" not in dataset[0] and "labels" not in batch
    assert tuple(batch["input_ids"].shape) == (2, 4)
