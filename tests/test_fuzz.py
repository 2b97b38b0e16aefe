"""Property-based tests: random configs, corrupted BABE files and odd inference inputs.

Each property ends in a correct result or a clear error, never a traceback. The suite keeps the
example counts small (profile ``suite``); ``FUZZ_SCALE=40`` multiplies them for a deeper search,
and ``scripts/fuzz_configs.py`` runs 10,000 config cases.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.ml.bias_classifier import NO_PREDICTION, BiasClassifier
from backend.ml.data.labels import LABEL_NAMES
from backend.ml.data.loading import DEMO_FILE, read_babe_file
from backend.ml.errors import DataError
from scripts.fuzz_configs import DOCUMENTS, OVERRIDES, config_outcome
from support.inference import make_tiny_model_dir

# FUZZ_SCALE=40 python -m pytest tests/test_fuzz.py  searches forty times as long.
SCALE = int(os.environ.get("FUZZ_SCALE", "1"))
settings.register_profile("suite", max_examples=25 * SCALE, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.load_profile("suite")


# ------------------------------------------------------------------------------ configs

@given(document=DOCUMENTS, overrides=OVERRIDES)
@settings(max_examples=60 * SCALE)
def test_random_yaml_and_set_values_give_a_valid_config_or_a_config_error(document, overrides):
    with tempfile.TemporaryDirectory() as directory:
        assert config_outcome(document, overrides, Path(directory)) in ("valid", "error")


# ------------------------------------------------------------------------------ data files

BASE = pd.read_csv(DEMO_FILE, sep=";", encoding="utf-8-sig", dtype=str,
                   keep_default_na=False).head(12)
COLUMNS = list(BASE.columns)


def _csv_bytes(frame: pd.DataFrame, separator: str = ";", encoding: str = "utf-8") -> bytes:
    return frame.to_csv(sep=separator, index=False).encode(encoding, errors="replace")


@st.composite
def corrupted_frames(draw) -> pd.DataFrame:
    """The demo rows with columns dropped or added and cells emptied or made huge."""
    frame = BASE.copy()
    for column in draw(st.lists(st.sampled_from(COLUMNS), max_size=2, unique=True)):
        frame = frame.drop(columns=column)
    if draw(st.booleans()):
        frame[draw(st.text(min_size=1, max_size=8))] = draw(st.text(max_size=10))
    for _ in range(draw(st.integers(0, 4))):
        row = draw(st.integers(0, len(frame) - 1))
        column = draw(st.sampled_from(list(frame.columns)))
        frame.iloc[row, frame.columns.get_loc(column)] = draw(st.one_of(
            st.just(""), st.just(" "), st.text(max_size=30),
            st.integers(1_000, 200_000).map(lambda size: "x" * size),
            st.sampled_from(["Biased", "biased ", "NO AGREEMENT", "Neutral", "1", "nan"])))
    return frame


@st.composite
def corrupted_csv(draw) -> bytes:
    frame = draw(corrupted_frames())
    separator = draw(st.sampled_from([";", ";", ",", "\t", "|"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "cp1252", "utf-16",
                                     "latin-1"]))
    data = _csv_bytes(frame, separator, encoding)
    damage = draw(st.sampled_from(["none", "truncate", "flip", "insert"]))
    if damage == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif damage == "flip" and data:
        position = draw(st.integers(0, len(data) - 1))
        data = data[:position] + bytes([data[position] ^ draw(st.integers(1, 255))]) + \
            data[position + 1:]
    elif damage == "insert":
        position = draw(st.integers(0, len(data)))
        data = data[:position] + draw(st.sampled_from([b'"', b"\0", b"\n", b";;", b"\r"])) + \
            data[position:]
    return data


@st.composite
def corrupted_xlsx(draw) -> bytes:
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE  # control characters no sheet holds

    frame = draw(corrupted_frames())
    frame = frame.rename(columns=lambda name: ILLEGAL_CHARACTERS_RE.sub("", name) or "blank")
    frame = frame.map(lambda cell: ILLEGAL_CHARACTERS_RE.sub("", cell))
    buffer = io.BytesIO()
    frame.to_excel(buffer, index=False)
    data = buffer.getvalue()
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return data


def assert_loaded_or_clear_error(path: Path) -> None:
    try:
        frame = read_babe_file(path)
    except DataError as error:
        message = str(error)
        assert message.startswith(str(path)), message
        assert "Traceback" not in message
        if "row" in message:
            assert any(character.isdigit() for character in message.split("row", 1)[1])
        return
    assert len(frame) > 0
    assert set(frame["label"]) <= set(LABEL_NAMES)
    assert (frame["text"].str.strip() != "").all()
    assert frame["source_row"].is_monotonic_increasing and frame["source_row"].min() >= 2


@given(data=corrupted_csv())
def test_a_corrupted_csv_loads_correctly_or_names_file_and_row(tmp_path, data):
    path = tmp_path / "final_labels_SG2.csv"
    path.write_bytes(data)
    assert_loaded_or_clear_error(path)


@given(data=corrupted_xlsx())
@settings(max_examples=10 * SCALE)
def test_a_corrupted_xlsx_loads_correctly_or_names_the_file(tmp_path, data):
    path = tmp_path / "final_labels_SG2.xlsx"
    path.write_bytes(data)
    assert_loaded_or_clear_error(path)


def test_a_csv_with_a_huge_cell_names_nothing_wrong_and_keeps_it(tmp_path):
    frame = BASE.copy()
    frame.loc[3, "text"] = "word " * 40_000  # 200,000 characters
    path = tmp_path / "final_labels_SG2.csv"
    path.write_bytes(_csv_bytes(frame))
    loaded = read_babe_file(path)
    assert len(loaded) == len(BASE) and len(loaded.loc[3, "text"]) == 200_000


# ------------------------------------------------------------------------------ inference

@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    model_dir = make_tiny_model_dir(tmp_path_factory.mktemp("fuzz") / "final_model",
                                    max_length=64)
    return BiasClassifier(batch_size=8).load_model(model_dir)


ODD_TEXTS = st.one_of(
    st.none(), st.just(""), st.just("   \n\t "), st.text(max_size=60),
    st.sampled_from(["😀🔥 outrageous!!! 🤬", "Сенатор сказал. 議員は言った。 قال السناتور.",
                     "\u200b\u200b", "\0\0", "a\ud800b", "Mixed: Ünïcödé ✓ — “quotes”."]),
    st.integers(), st.floats(), st.binary(max_size=5), st.lists(st.text(max_size=3), max_size=2))
ITEMS = st.one_of(ODD_TEXTS, st.fixed_dictionaries(
    {}, optional={"text": ODD_TEXTS, "title": ODD_TEXTS,
                  "id": st.text(max_size=4) | st.integers()}))


def assert_defined(result) -> None:
    assert result["status"] in ("ok", NO_PREDICTION)
    if result["status"] == "ok":
        assert result["label"] in LABEL_NAMES
        assert 0.0 <= result["confidence"] <= 1.0 and not math.isnan(result["confidence"])
    else:
        assert result["label"] is None and result["error"]


@given(items=st.lists(ITEMS, max_size=6))
def test_every_input_gets_a_prediction_or_an_explicit_no_prediction(classifier, items):
    results = classifier.predict_with_confidence(items)
    assert len(results) == len(items)
    for item, result in zip(items, results):
        assert_defined(result)
        if isinstance(item, str) and item.strip() and "\ud800" not in item:
            assert result["status"] == "ok"


@pytest.mark.slow
def test_none_alone_and_a_100000_character_article_in_a_batch(classifier):
    assert_defined(classifier.predict_with_confidence(None))
    assert classifier.predict_with_confidence(None)["status"] == NO_PREDICTION
    sentence = "The senator's reckless scheme " + "will ruin us " * 75 + "today. "
    article = (sentence * 100)[:100_000]  # long sentences, each over many token windows
    results = classifier.predict_with_confidence(
        [article, None, "", {"id": 3, "text": "🤬 Сенатор 議員"}, "Plain news."])
    assert [result["status"] for result in results] == ["ok", NO_PREDICTION, NO_PREDICTION,
                                                        "ok", "ok"]
    assert len(article) == 100_000 and results[0]["num_sentences"] == 99  # 98 whole, 1 cut
    assert results[0]["sentences"][0]["windows"] > 1 and results[3]["id"] == 3


def test_a_csv_cut_after_its_header_is_an_error_not_an_empty_dataset(tmp_path):
    path = tmp_path / "final_labels_SG2.csv"
    path.write_bytes(_csv_bytes(BASE).split(b"\n", 1)[0] + b"\n\n")
    with pytest.raises(DataError, match=f"^{path}: no sentences below the header \\(1 blank"):
        read_babe_file(path)
