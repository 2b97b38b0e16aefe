"""The unlabelled sentences a pre-training run reads: configured data, text files, exclusions.

Sentences are preprocessed as fine-tuning will see them (``data.preprocessing``), duplicates
are kept once, and every sentence of ``data.test_path`` and of ``pretraining.exclude_files`` is
removed, so an encoder can be pre-trained without reading the sentences it will be scored on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd

from ..data.loading import load_sentences
from ..data.preprocessing import preprocess_text
from ..errors import DataError

logger = logging.getLogger(__name__)

CSV_DELIMITERS = (";", ",", "\t")


class SourceReading(TypedDict):
    """One file (or the configured dataset) read: where from and how many sentences."""

    source: str
    sentences: int


@dataclass
class Corpus:
    """Pre-training sentences: ``train`` to learn from, ``holdout`` to measure the MLM loss on."""

    train: list[str]
    holdout: list[str]
    sources: list[SourceReading] = field(default_factory=list)
    """One per file read, in reading order."""
    counts: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """What results.json records under ``data``."""
        return {"sources": self.sources, "train_sentences": len(self.train),
                "holdout_sentences": len(self.holdout), **self.counts}


def sentence_key(text: str) -> str:
    """What makes two sentences the same: case and whitespace do not count."""
    return " ".join(text.lower().split())


def _text_column(frame: pd.DataFrame, path: Path) -> str:
    for column in frame.columns:
        if str(column).strip().lower() == "text":
            return column
    listed = ", ".join(str(column) for column in frame.columns) or "none"
    raise DataError(f"{path}: no 'text' column (columns: {listed}); a .csv or .xlsx file needs a "
                    f"'text' column, or write one sentence per line into a .txt file")


def _read_csv_texts(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig") as stream:
            header = stream.readline()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; re-save it as 'CSV UTF-8'") from None
    delimiter = next((candidate for candidate in CSV_DELIMITERS if "text" in
                      [name.strip().strip('"').lower() for name in header.split(candidate)]), ",")
    try:
        frame = pd.read_csv(path, sep=delimiter, encoding="utf-8-sig", dtype=str,
                            keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot parse as a CSV file ({str(error).strip()})") from None
    return frame[_text_column(frame, path)].tolist()


def _read_xlsx_texts(path: Path) -> list[str]:
    try:
        frame = pd.read_excel(path, dtype=str, keep_default_na=False, engine="openpyxl")
    except Exception as error:  # openpyxl and zipfile raise many types for one cause: a bad file
        raise DataError(f"{path}: cannot read as an Excel workbook (.xlsx) "
                        f"({type(error).__name__}: {error})") from None
    return frame[_text_column(frame, path)].tolist()


def _read_jsonl_texts(path: Path) -> list[str]:
    texts = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; re-save it as UTF-8") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}, line {number}: not JSON ({error.msg}); write one object "
                            f"with a 'text' field per line") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(f"{path}, line {number}: expected an object with a 'text' string, "
                            f"got {line.strip()[:60]!r}")
        texts.append(record["text"])
    return texts


def read_text_file(path: str | Path) -> list[str]:
    """The non-blank sentences of a .txt (one per line), .csv or .xlsx (a ``text`` column), or
    .jsonl (objects with ``text``) file.

    >>> read_text_file("../shared/data/babe/silver_standard_data_set.xlsx")[:1]  # doctest: +SKIP
    ['For New Presidents, Contentious Cabinet Votes Are Nothing New']
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        try:
            texts = path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text; re-save it as UTF-8") from None
    elif suffix == ".csv":
        texts = _read_csv_texts(path)
    elif suffix == ".xlsx":
        texts = _read_xlsx_texts(path)
    elif suffix == ".jsonl":
        texts = _read_jsonl_texts(path)
    else:
        raise DataError(f"{path}: unsupported file type {suffix or '(no suffix)'!r}; use .txt "
                        f"(one sentence per line), .csv or .xlsx (a 'text' column), or .jsonl "
                        f"(objects with 'text')")
    return [text.strip() for text in texts if isinstance(text, str) and text.strip()]


def _excluded_keys(config) -> tuple[set[str], list[str]]:
    """Sentence keys never to pre-train on, and where they come from."""
    keys: set[str] = set()
    origins = []
    if config.data.test_path:
        test_config = dataclasses.replace(config.data, dataset="babe", path=config.data.test_path)
        keys |= {sentence_key(text) for text in load_sentences(test_config)["text"]}
        origins.append(f"data.test_path {config.data.test_path}")
    for path in config.pretraining.exclude_files:
        keys |= {sentence_key(text) for text in read_text_file(path)}
        origins.append(str(path))
    return keys, origins


def collect_corpus(config) -> Corpus:
    """Read, preprocess, deduplicate and split the pre-training sentences of ``config``.

    >>> corpus = collect_corpus(ExperimentConfig(data=DataConfig(dataset="demo")))  # doctest: +SKIP
    >>> len(corpus.train), len(corpus.holdout)  # doctest: +SKIP
    (380, 20)
    """
    readings: list[tuple[str, list[str]]] = []
    if config.pretraining.use_configured_data:
        frame = load_sentences(config.data)
        readings.append((frame.attrs.get("source", config.data.dataset), list(frame["text"])))
    readings += [(str(path), read_text_file(path)) for path in config.pretraining.text_files]
    excluded, excluded_from = _excluded_keys(config)

    sentences, seen = [], set()
    counts = {"loaded": 0, "duplicates_removed": 0, "excluded": 0}
    sources: list[SourceReading] = []
    for source, texts in readings:
        sources.append({"source": source, "sentences": len(texts)})
        for text in texts:
            counts["loaded"] += 1
            text = preprocess_text(text, config.data.preprocessing)
            key = sentence_key(text)
            if key in excluded:
                counts["excluded"] += 1
            elif key in seen:
                counts["duplicates_removed"] += 1
            elif key:
                seen.add(key)
                sentences.append(text)
    recorded: dict[str, int | list[str]] = dict(counts)
    if excluded_from:
        recorded["excluded_from"] = excluded_from
        logger.info("left out %d sentence(s) found in %s", counts["excluded"],
                    ", ".join(excluded_from))
    if len(sentences) < 2:
        raise DataError(f"only {len(sentences)} distinct sentence(s) to pre-train on (read "
                        f"{counts['loaded']} from {', '.join(s['source'] for s in sources)}); "
                        f"add sentences with pretraining.text_files")
    order = np.random.default_rng([config.seed, 2]).permutation(len(sentences))
    holdout_size = min(len(sentences) - 1,
                       max(1, round(config.pretraining.holdout_share * len(sentences))))
    holdout = sorted(order[:holdout_size].tolist())
    train = sorted(order[holdout_size:].tolist())
    return Corpus([sentences[i] for i in train], [sentences[i] for i in holdout], sources,
                  recorded)
