"""Reading BABE (published files or the hub dataset) and the demo dataset into one checked frame.

Every problem with a file becomes a :class:`~backend.ml.errors.DataError` that names the file,
the rows and what is wrong, never a pandas traceback. Rows are never dropped without a count:
blank rows are skipped and counted, duplicate sentences are kept and counted.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd

from ..errors import DataError
from .labels import LABEL_NAMES, canonical_label

logger = logging.getLogger(__name__)

BABE_HUB_ID = "mediabiasgroup/BABE"
DEMO_FILE = Path(__file__).resolve().parent / "demo" / "demo_sentences.csv"
FRAME_COLUMNS = ["text", "label", "outlet", "topic", "type", "news_link", "biased_words",
                 "source_row"]
REQUIRED_COLUMNS = ("text", "label_bias")
OPTIONAL_COLUMNS = ("news_link", "outlet", "topic", "type", "label_opinion", "biased_words")
SUPPORTED_SUFFIXES = (".csv", ".xlsx")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
HUB_PROBE_SECONDS = 3.0
_MAX_LISTED = 10  # rows named in one message; the rest are counted
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FIX_SOURCE = ("Set data.path to a BABE final_labels_SG1/SG2 .csv or .xlsx file (or the directory "
               "holding them), or set the BABE_DATA_DIR environment variable to that directory.")


def load_sentences(data_config) -> pd.DataFrame:
    """All sentences of the configured dataset, checked, one row per sentence, in file order.

    Columns: text (as in the file), label (Non-biased / Biased / No agreement), outlet,
    topic, type, news_link, biased_words, source_row (the row a spreadsheet shows, header
    = row 1). ``frame.attrs["source"]`` says where the data came from; further attrs count
    blank rows skipped, duplicate texts kept and types derived from the outlet.

    >>> frame = load_sentences(DataConfig(dataset="demo"))  # doctest: +SKIP
    >>> frame.attrs["source"]  # doctest: +SKIP
    'demo dataset: .../backend/ml/data/demo/demo_sentences.csv'
    """
    if data_config.dataset == "demo":
        frame = read_babe_file(DEMO_FILE)
        frame.attrs["source"] = f"demo dataset: {DEMO_FILE}"
        return frame
    if data_config.dataset != "babe":
        raise DataError(f"data.dataset: unknown dataset {data_config.dataset!r}; use babe or demo")
    kind, location, reason = resolve_babe_source(data_config.path, data_config.subset)
    if kind == "hub":
        return load_hub_dataset(location, reason)
    return read_babe_file(Path(location))


def resolve_babe_source(path: str | None, subset: str) -> tuple[str, str, str]:
    """Where BABE is read from: ``("file", path, why)`` or ``("hub", dataset_id, why)``.

    ``path`` (data.path) wins; when it is empty, BABE_DATA_DIR; when both are empty, the hub.
    A directory resolves to its final_labels_<subset> file.
    """
    configured, origin = (path or "").strip(), "data.path"
    if not configured:
        configured, origin = os.environ.get("BABE_DATA_DIR", "").strip(), "BABE_DATA_DIR"
    if not configured:
        return "hub", BABE_HUB_ID, "neither data.path nor BABE_DATA_DIR is set"
    local = Path(configured).expanduser()
    if local.is_dir():
        return "file", str(find_babe_file(local, subset)), f"{origin} is a directory"
    if local.exists():
        return "file", str(local), f"{origin} is a file"
    if origin == "data.path" and looks_like_hub_id(configured):
        return "hub", configured, f"no local file or directory named {configured!r} exists"
    raise DataError(f"{origin}: {configured}: file or directory not found. {_FIX_SOURCE}")


def looks_like_hub_id(value: str) -> bool:
    """True for ``owner/name`` that cannot be a file path (no leading ./ ~, no file suffix)."""
    if value.startswith((".", "/", "~")) or "\\" in value:
        return False
    if Path(value).suffix.lower() in SUPPORTED_SUFFIXES + (".xls", ".tsv", ".txt", ".json"):
        return False
    return bool(_HUB_ID.match(value))


def find_babe_file(directory: Path, subset: str) -> Path:
    """The final_labels_<subset> file in ``directory``; csv before xlsx, exact name first.

    Accepts suffixed names such as ``final_labels_SG2_dev.csv`` when the exact name is absent.
    """
    stem = f"final_labels_{subset}".casefold()
    pattern = re.compile(rf"^{re.escape(stem)}(?:[_\-. ].*)?$")
    try:
        entries = sorted(directory.iterdir())
    except OSError as error:
        raise DataError(f"{directory}: cannot list the directory ({error.strerror})") from None
    candidates = [entry for entry in entries if entry.is_file()
                  and entry.suffix.lower() in SUPPORTED_SUFFIXES
                  and pattern.match(entry.stem.casefold())]
    if not candidates:
        found = [entry.name for entry in entries][:20]
        listing = ", ".join(found) if found else "nothing"
        raise DataError(f"{directory}: no final_labels_{subset}.csv or .xlsx in this directory "
                        f"(found: {listing}). Set data.subset (SG1 or SG2) to the file you have, "
                        f"or point data.path at the file itself.")
    candidates.sort(key=lambda entry: (entry.stem.casefold() != stem,
                                       entry.suffix.lower() != ".csv", entry.name))
    chosen = candidates[0]
    if len(candidates) > 1:
        logger.info("reading %s (also present, not read: %s)", chosen,
                    ", ".join(entry.name for entry in candidates[1:]))
    return chosen


def read_babe_file(path: Path) -> pd.DataFrame:
    """Read and check one BABE-format file (.csv ';'-separated UTF-8, or .xlsx).

    >>> read_babe_file(Path("final_labels_SG1.csv")).label.value_counts()  # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found. {_FIX_SOURCE}")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        raw = _read_csv(path)
    elif suffix == ".xlsx":
        raw = _read_xlsx(path)
    else:
        raise DataError(f"{path}: unsupported file type {suffix or '(no suffix)'!r}; BABE files "
                        f"are .csv (';'-separated, UTF-8) or .xlsx")
    frame = check_babe_frame(raw, str(path), first_row=2)
    frame.attrs["source"] = str(path)
    return frame


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        # Blank lines are kept (and skipped later, counted) so row numbers match a spreadsheet.
        return pd.read_csv(path, sep=";", encoding="utf-8-sig", dtype=str,
                           keep_default_na=False, skip_blank_lines=False)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (undecodable byte at offset {error.start}); "
                        f"BABE's CSV files are UTF-8. Re-save it as 'CSV UTF-8', or use the "
                        f".xlsx file") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as error:
        detail = str(error).strip().replace("Error tokenizing data. C error: ", "")
        raise DataError(f"{path}: cannot parse as a ';'-separated CSV: {detail}") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror or error})") from None


def _read_xlsx(path: Path) -> pd.DataFrame:
    try:
        return pd.read_excel(path, dtype=str, keep_default_na=False, engine="openpyxl")
    except Exception as error:  # openpyxl and zipfile raise many types for one cause: a bad file
        raise DataError(f"{path}: cannot read as an Excel workbook (.xlsx), the file is corrupt "
                        f"or not an .xlsx file ({type(error).__name__}: {error})") from None


def _rows(numbers: list[int]) -> str:
    shown = ", ".join(str(number) for number in numbers[:_MAX_LISTED])
    more = len(numbers) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _column_problem(raw: pd.DataFrame, where: str) -> str | None:
    present = {str(column).strip().casefold() for column in raw.columns}
    missing = [column for column in REQUIRED_COLUMNS if column not in present]
    if not missing:
        return None
    found = ", ".join(str(column) for column in raw.columns) or "none"
    message = (f"{where}: missing column(s) {', '.join(missing)}. Found columns: {found}. "
               f"Expected: {', '.join(REQUIRED_COLUMNS)} (required) and "
               f"{', '.join(OPTIONAL_COLUMNS)} (optional)")
    if len(raw.columns) == 1 and "," in str(raw.columns[0]):
        message += ". The header holds commas: BABE's CSV files are ';'-separated"
    return message


def check_babe_frame(raw: pd.DataFrame, where: str, first_row: int) -> pd.DataFrame:
    """Validate a raw BABE table and return it in the loader's shape.

    ``first_row`` is the number a reader sees for the first data row (2 in a file with a
    header). Every problem found is reported at once in one DataError.
    """
    problem = _column_problem(raw, where)
    if problem:
        raise DataError(problem)
    raw = raw.rename(columns=lambda column: str(column).strip().casefold())
    raw = raw.loc[:, ~raw.columns.duplicated()].fillna("").astype(str)
    for column in OPTIONAL_COLUMNS:
        if column not in raw.columns:
            raw[column] = ""
    raw = raw.reset_index(drop=True)
    source_rows = pd.Series(range(first_row, first_row + len(raw)), dtype="int64")

    blank = (raw[list(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)].apply(lambda col: col.str.strip())
             == "").all(axis=1)
    raw = raw[~blank].reset_index(drop=True)
    source_rows = source_rows[~blank].reset_index(drop=True)
    if raw.empty:
        blank_lines = f" ({int(blank.sum())} blank line(s))" if blank.any() else ""
        raise DataError(f"{where}: no sentences below the header{blank_lines}; is the file "
                        f"truncated, or the wrong one?")

    problems = []
    empty = raw["text"].str.strip() == ""
    if empty.any():
        rows = source_rows[empty].tolist()
        problems.append(f"empty text in {len(rows)} row(s): {_rows(rows)}")
    labels = raw["label_bias"].map(canonical_label)
    unknown = labels.isna()
    if unknown.any():
        rows = [f"row {row}: {value!r}" for row, value in
                zip(source_rows[unknown], raw.loc[unknown, "label_bias"])]
        shown = "; ".join(rows[:_MAX_LISTED]) + (f"; and {len(rows) - _MAX_LISTED} more"
                                                 if len(rows) > _MAX_LISTED else "")
        problems.append(f"unknown label_bias in {len(rows)} row(s): {shown}. Valid labels: "
                        f"{', '.join(LABEL_NAMES)}")
    if problems:
        listing = "\n".join(f"  - {item}" for item in problems)
        raise DataError(f"{where}: {len(problems)} problem(s) in the data:\n{listing}")

    frame = pd.DataFrame({
        "text": raw["text"], "label": labels.astype(str),
        "outlet": raw["outlet"].str.strip(), "topic": raw["topic"].str.strip(),
        "type": raw["type"].str.strip(), "news_link": raw["news_link"].str.strip(),
        "biased_words": raw["biased_words"].str.strip(), "source_row": source_rows,
    })[FRAME_COLUMNS]
    derived = derive_types_from_outlets(frame)
    duplicates = int(frame["text"].str.strip().duplicated().sum())
    if duplicates:
        logger.info("%s: %d sentence(s) repeat an earlier one; all are kept", where, duplicates)
    frame.attrs.update({"rows_read": len(frame) + int(blank.sum()),
                        "blank_rows_skipped": int(blank.sum()),
                        "duplicate_texts": duplicates, "types_derived": derived})
    return frame


def _outlet_key(outlet: str) -> str:
    # "Fox News", "fox-news" and "fox news" are one outlet.
    return re.sub(r"[^0-9a-z]+", "", outlet.casefold())


def derive_types_from_outlets(frame: pd.DataFrame) -> int:
    """Fill empty ``type`` cells from other rows of the same outlet; returns how many were filled.

    Only an outlet with exactly one known type is used, so nothing is guessed.
    """
    keys = frame["outlet"].map(_outlet_key)
    known = frame["type"] != ""
    types = frame.loc[known, "type"].groupby(keys[known]).agg(lambda values: set(values))
    unique = {key: next(iter(values)) for key, values in types.items() if len(values) == 1}
    fillable = ~known & keys.isin(unique.keys()) & (keys != "")
    frame.loc[fillable, "type"] = keys[fillable].map(unique)
    return int(fillable.sum())


# ---------------------------------------------------------------------------------- the hub

def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline_requested() -> bool:
    """True when HF_HUB_OFFLINE (or HF_DATASETS_OFFLINE / TRANSFORMERS_OFFLINE) is set."""
    return any(_is_true(os.environ.get(name)) for name in OFFLINE_VARIABLES)


@contextmanager
def _libraries_offline() -> Iterator[None]:
    # huggingface_hub and datasets read HF_HUB_OFFLINE once, at import. An environment changed
    # later (a notebook, a test) must still be honoured, or "offline" would go to the network.
    import datasets.config
    import huggingface_hub.constants
    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


def hub_unreachable_reason() -> str | None:
    """Why the hub cannot be reached (one quick TCP connect), or None when it answers.

    Without a network the datasets library retries for minutes; this check fails in seconds.
    Skipped behind a proxy, where a direct connection says nothing.
    """
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                                             "all_proxy")):
        return None
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_SECONDS).close()
    except OSError as error:
        return f"{host}:{port} cannot be reached ({error.strerror or error})"
    return None


def load_hub_dataset(dataset_id: str, reason: str = "") -> pd.DataFrame:
    """Load a BABE-shaped dataset with ``datasets.load_dataset``; all splits, in order.

    Honours HF_HUB_OFFLINE (only the local cache is read) and fails within seconds when the
    hub cannot be reached. Integer labels follow the hub's BABE convention: 0 Non-biased,
    1 Biased.
    """
    where = f"hub dataset {dataset_id}"
    because = f" ({reason})" if reason else ""
    try:
        if hub_offline_requested():
            with _libraries_offline():
                loaded = _hub_load(dataset_id)
        else:
            unreachable = hub_unreachable_reason()
            if unreachable:
                raise DataError(f"cannot load {where}{because}: the Hugging Face Hub is not "
                                f"reachable: {unreachable}. {_FIX_SOURCE}")
            loaded = _hub_load(dataset_id)
    except DataError:
        raise
    except Exception as error:  # datasets raises many types (connection, not found, auth)
        offline = " in offline mode (HF_HUB_OFFLINE is set)" if hub_offline_requested() else ""
        raise DataError(f"cannot load {where}{because}{offline}: {type(error).__name__}: "
                        f"{error}. {_FIX_SOURCE}") from None
    frame = check_babe_frame(loaded, where, first_row=1)
    frame.attrs["source"] = f"{where} (splits: {loaded.attrs.get('splits', '')})"
    return frame


def _hub_load(dataset_id: str) -> pd.DataFrame:
    import datasets  # heavy; only the hub path needs it

    loaded = datasets.load_dataset(dataset_id)
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    parts = []
    for split in loaded.values():
        part = split.to_pandas()
        feature = split.features.get("label")
        if "label_bias" not in part.columns and "label" in part.columns:
            names = getattr(feature, "names", None) or ["Non-biased", "Biased"]
            part["label_bias"] = part["label"].map(partial(_class_name, names=names))
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    frame.attrs["splits"] = ", ".join(loaded.keys())
    return frame


def _class_name(value: object, names: Sequence[str]) -> object:
    """``names[value]`` for a class index within range; any other value as it is."""
    text = str(value)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
        return names[int(text)]
    return value
