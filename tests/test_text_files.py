"""The one reader of sentence and article files (predict --input, pre-training corpora,
distillation's unlabelled sentences)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from backend.ml.errors import DataError
from backend.ml.text_files import UnreadableLine, read_records, read_texts
from support.cli import REPO_ROOT

DEMO_FILE = REPO_ROOT / "backend" / "ml" / "data" / "demo" / "demo_sentences.csv"
NEWS = ["The council approved the budget on Monday.",
        "Critics called the plan a reckless giveaway.",
        "Officials said the vote was \"close\"; the count, 5-4."]


def test_every_format_gives_the_same_texts(tmp_path):
    (tmp_path / "news.txt").write_text("\ufeff" + "\n\n  ".join(NEWS) + "  \n", encoding="utf-8")
    (tmp_path / "news.csv").write_text(
        "id,text\n" + "".join(f'{n},"{text.replace(chr(34), chr(34) * 2)}"\n'
                              for n, text in enumerate(NEWS, start=1)), encoding="utf-8")
    (tmp_path / "news.jsonl").write_text(
        "".join(json.dumps({"text": text}) + "\n" for text in NEWS), encoding="utf-8")
    pd.DataFrame({"text": NEWS, "outlet": ["a", "b", "c"]}).to_excel(tmp_path / "news.xlsx",
                                                                     index=False)
    for suffix in ("txt", "csv", "jsonl", "xlsx"):
        assert read_texts(tmp_path / f"news.{suffix}") == NEWS, suffix
    assert len(read_texts(DEMO_FILE)) == 400  # BABE's ';'-separated format


def test_records_keep_ids_titles_and_numbers_lines(tmp_path):
    (tmp_path / "articles.csv").write_text(
        "ID;Title;TEXT\na-7;Budget;First sentence.\n;;Second one.\n", encoding="utf-8")
    assert list(read_records(tmp_path / "articles.csv")) == [
        {"id": "a-7", "title": "Budget", "text": "First sentence."},
        {"id": 2, "text": "Second one."}]
    (tmp_path / "items.jsonl").write_text('"just a string"\n\n{"id": "x", "text": "An object."}\n'
                                          '{broken\n[1, 2]\n', encoding="utf-8")
    assert list(read_records(tmp_path / "items.jsonl")) == [
        {"id": 1, "text": "just a string"}, {"id": "x", "text": "An object."},
        UnreadableLine(4, "invalid JSON (Expecting property name enclosed in double quotes)"),
        [1, 2]]


def test_strict_reading_names_the_file_and_line(tmp_path):
    (tmp_path / "bad.csv").write_text("sentence,label\nHello there.,1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.csv: no 'text' column \(columns: sentence, label\)"):
        read_texts(tmp_path / "bad.csv")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{broken\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: invalid JSON"):
        read_texts(tmp_path / "bad.jsonl")
    (tmp_path / "latin1.txt").write_bytes("Zürich a voté.\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt: not UTF-8 text"):
        read_texts(tmp_path / "latin1.txt")
    (tmp_path / "notes.docx").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match=r"notes.docx: unsupported file type '.docx'; use .txt"):
        read_texts(tmp_path / "notes.docx")
    with pytest.raises(DataError, match=r"missing.txt: file not found"):
        read_texts(tmp_path / "missing.txt")
