"""What the server writes down: every prediction (rotated JSONL) and every reader's label.

Layout of a serving log directory (default ``experiments/serving``)::

    sessions.jsonl             one line per server start: versions, run dirs, share, runtime
    predictions.jsonl          newest predictions; rotated to predictions.1.jsonl, .2, ...
    feedback.jsonl             labels from readers and editors

A prediction record holds the time, version, run id, key (article id or text hash), label,
confidence, probabilities, latency and the text's length in words; the text itself only when the
server runs with ``--log-text`` (off by default: readers' articles stay private).

>>> log = PredictionLog(Path("experiments/serving"), max_bytes=10_000_000,
...                     backups=5)  # doctest: +SKIP
>>> log.write([{"version": "production", "label": "Biased", ...}])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from ..fileio import append_jsonl, read_jsonl
from ..run_directory import utc_now

PREDICTIONS_FILE = "predictions.jsonl"
FEEDBACK_FILE = "feedback.jsonl"
SESSIONS_FILE = "sessions.jsonl"
DEFAULT_LOG_DIR = Path("experiments/serving")


def log_time() -> str:
    """When a record is logged, to the millisecond (requests come faster than once a second)."""
    return utc_now("milliseconds")


class PredictionLog:
    """Appends prediction records; past ``max_bytes`` the file rotates, keeping ``backups``."""

    def __init__(self, directory: Path, max_bytes: int = 50_000_000, backups: int = 10):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / PREDICTIONS_FILE
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()

    def write(self, records: list[dict]) -> None:
        lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        with self._lock:
            if self.path.is_file() and self.path.stat().st_size + len(lines) > self.max_bytes:
                self._rotate()
            with open(self.path, "a", encoding="utf-8") as stream:
                stream.write(lines)
                stream.flush()

    def _rotate(self) -> None:
        oldest = self.directory / f"predictions.{self.backups}.jsonl"
        oldest.unlink(missing_ok=True)
        for number in range(self.backups - 1, 0, -1):
            older = self.directory / f"predictions.{number}.jsonl"
            if older.is_file():
                os.replace(older, self.directory / f"predictions.{number + 1}.jsonl")
        if self.backups > 0:
            os.replace(self.path, self.directory / "predictions.1.jsonl")
        else:
            self.path.unlink()


def read_predictions(directory: Path) -> list[dict]:
    """Every logged prediction still on disk, oldest file first."""
    directory = Path(directory)
    rotated = sorted(directory.glob("predictions.*.jsonl"),
                     key=lambda path: -int(path.name.split(".")[1]))
    files = [*rotated, directory / PREDICTIONS_FILE]
    return [record for path in files if path.is_file() for record in read_jsonl(path)]


class FeedbackStore:
    """Appends reader and editor labels to ``feedback.jsonl``."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / FEEDBACK_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def add(self, record: dict) -> dict:
        stored = {"received_at": log_time(), **record}
        with self._lock:
            append_jsonl(self.path, stored)
        return stored


def read_feedback(directory_or_file: Path) -> list[dict]:
    """Every stored label; ``directory_or_file`` is a log directory or a feedback.jsonl file."""
    path = Path(directory_or_file)
    if path.is_dir():
        path = path / FEEDBACK_FILE
    return read_jsonl(path) if path.is_file() else []


def record_session(directory: Path, session: dict) -> None:
    """Note which runs a server start serves, so reports can find their training data."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    append_jsonl(Path(directory) / SESSIONS_FILE, {"started_at": log_time(), **session})


def read_sessions(directory: Path) -> list[dict]:
    path = Path(directory) / SESSIONS_FILE
    return read_jsonl(path) if path.is_file() else []
