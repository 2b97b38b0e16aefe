"""Files of sentences or articles, read by their suffix: the one reader behind ``predict
--input``, a pre-training corpus and distillation's unlabelled sentences.

``.txt`` holds one text per line; ``.csv`` and ``.xlsx`` a ``text`` column (any case), with
optional ``id`` and ``title`` columns; ``.jsonl`` one object with ``text`` (or a JSON string)
per line. A CSV file may be separated by ``,``, ``;`` (BABE's published files) or a tab.

>>> [record["text"] for record in read_records("news.txt")]  # doctest: +SKIP
['First sentence.', 'Second one.']
>>> read_texts("../shared/data/babe/silver_standard_data_set.xlsx")[:1]  # doctest: +SKIP
['For New Presidents, Contentious Cabinet Votes Are Nothing New']
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataError

TEXT_FILE_FORMATS = (".txt", ".csv", ".xlsx", ".jsonl")
CSV_DELIMITERS = (",", ";", "\t")


@dataclass(frozen=True)
class UnreadableLine:
    """A line of a ``.jsonl`` file that is not JSON: the caller decides whether it is fatal."""

    line: int
    error: str


def read_records(path: str | Path) -> Iterator[Any]:
    """The file's inputs in order, streamed: a dict with ``id`` (the given one, else the line
    or row number) and ``text`` (and ``title`` when the file has one) per input, an
    :class:`UnreadableLine` for a ``.jsonl`` line that is not JSON, and a ``.jsonl`` value
    that is neither an object nor a string as it is. Blank lines are skipped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    readers = {".txt": _txt_records, ".csv": _csv_records, ".xlsx": _xlsx_records,
               ".jsonl": _jsonl_records}
    suffix = path.suffix.lower()
    if suffix not in readers:
        raise DataError(f"{path}: unsupported file type {suffix or '(no suffix)'!r}; use .txt "
                        f"(one text per line), .csv or .xlsx (a 'text' column), or .jsonl "
                        f"(objects with 'text')")
    return _decoded(path, readers[suffix](path))


def read_texts(path: str | Path) -> list[str]:
    """The non-blank texts of the file, stripped; a line that is not an object with a ``text``
    string is an error naming the line."""
    texts = []
    for number, record in enumerate(read_records(path), start=1):
        if isinstance(record, UnreadableLine):
            raise DataError(f"{path}, line {record.line}: {record.error}; write one object with "
                            f"a 'text' field per line")
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(f"{path}, input {number}: expected an object with a 'text' string, "
                            f"got {str(record)[:60]!r}")
        if record["text"].strip():
            texts.append(record["text"].strip())
    return texts


def _decoded(path: Path, records: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from records
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; re-save it as UTF-8 ('CSV UTF-8' from a "
                        f"spreadsheet)") from None


def _txt_records(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8-sig") as stream:
        for number, line in enumerate(stream, start=1):
            if line.strip():
                yield {"id": number, "text": line.strip()}


def _columns(names: list[str], path: Path) -> dict[str, str]:
    """Lower-cased column name -> the file's spelling; a file without ``text`` is refused."""
    columns = {str(name).strip().strip('"').lower(): name for name in names}
    if "text" not in columns:
        listed = ", ".join(str(name) for name in names) or "none"
        raise DataError(f"{path}: no 'text' column (columns: {listed}); a .csv or .xlsx file "
                        f"needs a 'text' column, or write one text per line into a .txt file")
    return columns


def _row_record(row: dict, columns: dict[str, str], number: int) -> dict:
    identifier, title = columns.get("id"), columns.get("title")
    record = {"id": row[identifier] if identifier and row.get(identifier) not in (None, "")
              else number, "text": row[columns["text"]] or ""}
    if title and row.get(title):
        record["title"] = row[title]
    return record


def _csv_records(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8-sig", newline="") as stream:
        header = stream.readline()
        delimiter = next((candidate for candidate in CSV_DELIMITERS if "text" in
                          [name.strip().strip('"').lower() for name in header.split(candidate)]),
                         ",")
        stream.seek(0)
        reader = csv.DictReader(stream, delimiter=delimiter)
        columns = _columns(list(reader.fieldnames or []), path)
        try:
            for number, row in enumerate(reader, start=1):
                yield _row_record(row, columns, number)
        except csv.Error as error:
            raise DataError(f"{path}, row {reader.line_num}: cannot parse as CSV ({error})"
                            ) from None


def _xlsx_records(path: Path) -> Iterator[dict]:
    import pandas as pd  # only spreadsheets need it

    try:
        frame = pd.read_excel(path, dtype=str, keep_default_na=False, engine="openpyxl")
    except Exception as error:  # openpyxl and zipfile raise many types for one cause: a bad file
        raise DataError(f"{path}: cannot read as an Excel workbook (.xlsx) "
                        f"({type(error).__name__}: {error})") from None
    columns = _columns(list(frame.columns), path)
    for number, row in enumerate(frame.to_dict("records"), start=1):
        yield _row_record(row, columns, number)


def _jsonl_records(path: Path) -> Iterator[Any]:
    with open(path, encoding="utf-8-sig") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                yield UnreadableLine(number, f"invalid JSON ({error.msg})")
                continue
            if isinstance(value, str):
                value = {"text": value}
            yield {"id": number, **value} if isinstance(value, dict) else value
