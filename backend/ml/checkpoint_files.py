"""Step checkpoints on disk: their names, the integrity manifest, and which ones are valid.

A step checkpoint ``checkpoints/step-000200/`` holds ``model/``, ``training_state.pt`` and,
written last, ``manifest.json`` with every file's size and SHA-256. A checkpoint whose manifest
is missing or disagrees with the files (a torn write, a truncated copy, flipped bits) is not
valid and is never resumed from. This module needs no torch, so the experiment tools and the
cloud commands can tell whether a run is resumable without importing the trainer.

>>> latest_valid_checkpoint(Path("experiments/runs/tiny_3f9a1c/checkpoints"))  # doctest: +SKIP
PosixPath('experiments/runs/tiny_3f9a1c/checkpoints/step-000200')
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

from .fileio import atomic_write_json

STATE_FILE = "training_state.pt"
MODEL_DIRECTORY = "model"
MANIFEST_FILE = "manifest.json"
BEST_DIRECTORY = "best"
MANIFEST_FORMAT = 1
_STEP_DIRECTORY = re.compile(r"^step-(\d+)$")
# An unfinished write: save_checkpoint stages ``.step-000200.partial`` and renames it.
_STAGING_DIRECTORY = re.compile(r"^\.step-(\d+)\.(partial|old)$")

logger = logging.getLogger(__name__)


def step_directory_name(step: int) -> str:
    """``step-000200`` for step 200."""
    return f"step-{step:06d}"


def staging_directory(final: Path) -> Path:
    """Where the checkpoint ``final`` is assembled before its rename into place."""
    return final.with_name(f".{final.name}.partial")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files_under(directory: Path) -> list[str]:
    return sorted(path.relative_to(directory).as_posix() for path in directory.rglob("*")
                  if path.is_file() and path.name != MANIFEST_FILE)


def write_manifest(directory: str | os.PathLike) -> dict:
    """Record every file of ``directory`` (size, SHA-256) in its ``manifest.json``; returns it.

    Call it after everything else is written: the manifest's presence says the rest is whole.
    """
    directory = Path(directory)
    files = {name: {"size": (directory / name).stat().st_size,
                    "sha256": _sha256(directory / name)} for name in _files_under(directory)}
    manifest = {"format": MANIFEST_FORMAT, "files": files}
    atomic_write_json(directory / MANIFEST_FILE, manifest)
    return manifest


def checkpoint_problem(directory: str | os.PathLike, verify_checksums: bool = True) -> str | None:
    """Why the step checkpoint ``directory`` cannot be resumed from, or None when it is valid.

    ``verify_checksums=False`` checks presence and sizes only (fast; enough to list runs).

    >>> checkpoint_problem("runs/tiny_3f9a1c/checkpoints/step-000200")  # doctest: +SKIP
    'model/model.safetensors has 1024 bytes, the manifest says 90866120 (truncated)'
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        return (f"no {MANIFEST_FILE} (the checkpoint write did not finish, or the checkpoint "
                f"was damaged)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        return f"{MANIFEST_FILE} cannot be read ({error})"
    if STATE_FILE not in files or not any(name.startswith(f"{MODEL_DIRECTORY}/") for name in files):
        return f"{MANIFEST_FILE} lists neither {STATE_FILE} nor {MODEL_DIRECTORY}/"
    for name, expected in sorted(files.items()):
        path = directory / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != expected.get("size"):
            return f"{name} has {size} bytes, the manifest says {expected.get('size')} (truncated?)"
        if verify_checksums and _sha256(path) != expected.get("sha256"):
            return f"{name} does not match its SHA-256 checksum (the file is corrupted)"
    return None


def _step_directories(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    if not checkpoints_dir.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in checkpoints_dir.iterdir()
             if (match := _STEP_DIRECTORY.match(path.name)) and path.is_dir()]
    return sorted(found)


def step_checkpoints(checkpoints_dir: str | os.PathLike, verify_checksums: bool = True
                     ) -> list[Path]:
    """Valid step checkpoints of ``checkpoints_dir``, oldest first.

    >>> [path.name for path in step_checkpoints(run_dir / "checkpoints")]  # doctest: +SKIP
    ['step-000100', 'step-000200']
    """
    return [path for _, path in _step_directories(Path(checkpoints_dir))
            if checkpoint_problem(path, verify_checksums) is None]


def latest_valid_checkpoint(checkpoints_dir: str | os.PathLike, verify_checksums: bool = True
                            ) -> Path | None:
    """The newest valid step checkpoint, warning about each newer one that is skipped; or None.

    >>> latest_valid_checkpoint(run_dir / "checkpoints")  # doctest: +SKIP
    WARNING: skipping checkpoint .../step-000300: no manifest.json (...); trying an earlier one
    PosixPath('.../checkpoints/step-000200')
    """
    checkpoints_dir = Path(checkpoints_dir)
    chosen: Path | None = None
    chosen_step = -1
    for step, path in reversed(_step_directories(checkpoints_dir)):
        problem = checkpoint_problem(path, verify_checksums)
        if problem is None:
            chosen, chosen_step = path, step
            break
        logger.warning("skipping checkpoint %s: %s; trying an earlier one", path, problem)
    for step, path in _staging_directories(checkpoints_dir):
        if step > chosen_step:
            logger.warning("ignoring %s: a checkpoint write that never finished", path)
    return chosen


def _staging_directories(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    if not checkpoints_dir.is_dir():
        return []
    return sorted((int(match.group(1)), path) for path in checkpoints_dir.iterdir()
                  if (match := _STAGING_DIRECTORY.match(path.name)))


def replace_directory(staging: Path, final: Path) -> None:
    """Rename ``staging`` to ``final``; an existing ``final`` is moved aside first, then removed."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def remove_old_checkpoints(checkpoints_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Keep the newest ``keep`` valid step checkpoints; remove older ones and leftovers.

    Leftovers are invalid step checkpoints older than the newest valid one and unfinished
    writes (``.step-*.partial``). ``best/`` and the newest valid checkpoint are never removed.
    Returns what was removed.
    """
    checkpoints_dir = Path(checkpoints_dir)
    steps = _step_directories(checkpoints_dir)
    valid = [(step, path) for step, path in steps
             if checkpoint_problem(path, verify_checksums=False) is None]
    if not valid:
        return []
    newest_valid_step = valid[-1][0]
    doomed = [path for _, path in valid[:-max(keep, 1)]]
    doomed += [path for step, path in steps if step < newest_valid_step
               and (step, path) not in valid]
    doomed += [path for _, path in _staging_directories(checkpoints_dir)]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed
