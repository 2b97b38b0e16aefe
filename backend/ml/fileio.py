"""Atomic file writes: a reader never sees a half-written file, a crash never leaves one.

A full disk or an unwritable directory becomes a :class:`StorageError` naming the path and what
to do, and the file being written is left as it was.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import UserError

# Failures of the storage itself, which the user fixes (free space, pick another directory);
# any other OSError is a bug and keeps its traceback.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                   errno.ENOTDIR, errno.EFBIG, errno.EEXIST}


class StorageError(UserError):
    """A file or directory could not be written: disk full, read-only or not a directory."""

    def __init__(self, path: str | os.PathLike, cause: str, advice: str):
        self.path, self.cause, self.advice = Path(path), cause, advice
        super().__init__(f"cannot write {path}: {cause}. {advice}")

    def about(self, path: str | os.PathLike) -> StorageError:
        """The same failure, told about ``path`` (what the user asked for, not a temporary)."""
        return StorageError(path, self.cause, self.advice)


def storage_error(path: str | os.PathLike, error: OSError) -> StorageError | None:
    """A StorageError explaining ``error`` while writing ``path``; None for other OSErrors.

    >>> error = OSError(errno.ENOSPC, "No space left on device")
    >>> print(storage_error("runs/r1/results.json", error))  # doctest: +NORMALIZE_WHITESPACE
    cannot write runs/r1/results.json: no space left on device. Free some space (or choose an
    output directory on another disk with --output-dir) and run again.
    """
    if error.errno not in _STORAGE_ERRNOS:
        return None
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        cause = "no space left on device" if error.errno != errno.EDQUOT else "disk quota exceeded"
        advice = ("Free some space (or choose an output directory on another disk with "
                  "--output-dir) and run again.")
    elif error.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = error.filename or path
        cause = f"{blocker} is a file where a directory is needed"
        advice = "Move that file away or choose another output directory with --output-dir."
    else:
        cause = ("the file system is read-only" if error.errno == errno.EROFS
                 else "permission denied")
        advice = ("Choose a writable output directory with --output-dir (or output_dir in the "
                  "config), or fix the directory's permissions.")
    return StorageError(path, cause, advice)


def write_failure(path: str | os.PathLike, error: BaseException) -> StorageError | None:
    """:func:`storage_error` for any failed write, including libraries that hide the OSError.

    torch reports a full disk as a RuntimeError raised while handling the OSError, and
    safetensors as its own error type, so the OSError is looked for among the causes, and else a
    failure that mentions ENOSPC, or leaves less than 1 MiB free, counts as a full disk.
    None when ``error`` is not about storage.
    """
    if not isinstance(error, Exception):
        return None  # KeyboardInterrupt and friends are not the disk's fault
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, StorageError):
            return cause.about(path)
        if isinstance(cause, OSError) and cause.errno is not None:
            return storage_error(path, cause)
        cause = cause.__cause__ or cause.__context__
    text = str(error)
    full = "No space left" in text or "os error 28" in text
    if not full:
        try:
            existing = next(parent for parent in Path(path).parents if parent.exists())
            full = shutil.disk_usage(existing).free < 1 << 20
        except (OSError, StopIteration):
            full = False
    return storage_error(path, OSError(errno.ENOSPC, "No space left on device")) if full else None


@contextmanager
def storage_errors_explained(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk or unwritable directory inside the block into StorageError about ``path``.

    >>> with storage_errors_explained(run_dir):  # doctest: +SKIP
    ...     run_dir.mkdir()
    """
    try:
        yield
    except OSError as error:
        explained = storage_error(path, error)
        if explained is None:
            raise
        raise explained from error


def fsync_directory(path: str | os.PathLike) -> None:
    """Flush a directory's entries (a rename into it) to disk; a no-op where unsupported."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename itself still happened
    finally:
        os.close(handle)


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """fsync every file under ``root``, then every directory, deepest first."""
    directories = []
    for directory, _, files in os.walk(root):
        directories.append(directory)
        for name in files:
            with open(os.path.join(directory, name), "rb") as stream:
                os.fsync(stream.fileno())
    for directory in reversed(directories):
        fsync_directory(directory)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    The new content is fsync'd before the rename, so after a power loss ``path`` holds the old
    or the new content. Raises StorageError (disk full, read-only, ...) leaving ``path`` as it was.

    >>> with atomic_path("plot.png") as tmp:  # doctest: +SKIP
    ...     figure.savefig(tmp)
    """
    target = Path(path)
    with storage_errors_explained(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                             suffix=target.suffix or ".tmp")
    os.close(handle)
    try:
        with storage_errors_explained(target):
            yield Path(temporary)
            with open(temporary, "rb") as stream:
                os.fsync(stream.fileno())
            # mkstemp creates owner-only files; give the result the permissions new files get.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)
            os.replace(temporary, target)
            fsync_directory(target.parent)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _json_safe(value: Any) -> Any:
    # NaN and infinity are not JSON; null says "no value" to every reader.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _json_safe(value.item())
    return value


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON atomically; numpy scalars and NaN are made portable."""
    atomic_write_text(path, json.dumps(_json_safe(data), indent=2, ensure_ascii=False) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line to ``path``, so a crash loses at most the line being written.

    When the disk fills mid-line the partial line is cut off again and StorageError is raised.
    """
    line = (json.dumps(_json_safe(record), ensure_ascii=False) + "\n").encode("utf-8")
    with storage_errors_explained(path):
        handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size_before = os.fstat(handle).st_size
            written = 0
            while written < len(line):
                written += os.write(handle, line[written:])
        except OSError:
            os.ftruncate(handle, size_before)
            raise
        finally:
            os.close(handle)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every complete JSON line of ``path``; a torn last line (crashed writer) is skipped."""
    records = []
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
