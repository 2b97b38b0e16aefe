"""The model registry on disk: which run serves as ``production`` and which as ``candidate``.

``experiments/registry/registry.json`` holds the current stages and the full promotion history
(who, when, why, the metrics a run was promoted on, the comparison with production when one was
made). It reads run directories only; a stage points at a run directory, never copies it.

This module owns that file, as ``run_directory`` owns a run's: it sits below everything that
reads a stage (``BiasClassifier().load_model("production")``, serving, retrain), while the
``registry`` package adds the comparison gate and the ``promote`` / ``registry`` commands.

>>> registry = ModelRegistry("experiments/registry")  # doctest: +SKIP
>>> registry.promote("experiments/runs/tiny_3f9a1c", "production",
...                  reason="first model")  # doctest: +SKIP
>>> registry.run_dir("production")  # doctest: +SKIP
PosixPath('/.../experiments/runs/tiny_3f9a1c')
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import LAUNCHER, UserError
from .fileio import atomic_write_json
from .run_directory import RunLayout, read_results, utc_now

DEFAULT_REGISTRY_DIR = Path("experiments/registry")
REGISTRY_FILE = "registry.json"
LOCK_FILE = "registry.lock"
STAGES = ("production", "candidate")
SCHEMA_VERSION = 1
PROMOTED_METRICS = ("accuracy", "f1_macro", "f1_weighted", "f1_biased", "loss")


class RegistryError(UserError):
    """The registry cannot do what was asked (no such stage, unreadable file, failed gate)."""


def current_user() -> str:
    """Who promotes: ``$REGISTRY_USER`` when set (CI, shared accounts), else the login name."""
    try:
        return os.environ.get("REGISTRY_USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


def run_metrics(run_dir: Path) -> dict:
    """The validation and test scalars of a run's results.json, the numbers it is promoted on."""
    try:
        results = read_results(run_dir)
    except (OSError, ValueError) as error:
        raise RegistryError(f"{run_dir}/results.json cannot be read ({error}); only finished runs "
                            "can be promoted") from None
    if results.get("status") != "completed":
        raise RegistryError(f"{run_dir.name} has status {results.get('status')!r}; only a "
                            "completed run can be promoted")
    return {split: {name: results.get(split, {}).get(name) for name in PROMOTED_METRICS
                    if results.get(split, {}).get(name) is not None}
            for split in ("eval", "test")}


class ModelRegistry:
    """Stages and their history in ``<registry_dir>/registry.json``."""

    def __init__(self, registry_dir: str | os.PathLike = DEFAULT_REGISTRY_DIR):
        self.directory = Path(registry_dir)
        self.path = self.directory / REGISTRY_FILE

    def _read(self) -> dict:
        if not self.path.is_file():
            return {"schema_version": SCHEMA_VERSION, "stages": {}, "history": []}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RegistryError(f"{self.path} cannot be read ({error}); restore it from a backup "
                                "or delete it to start a new registry") from None
        if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
            raise RegistryError(f"{self.path} is not a model registry (no 'stages')")
        data.setdefault("history", [])
        return data

    def stages(self) -> dict[str, dict]:
        """The current entry of each filled stage."""
        return self._read()["stages"]

    def history(self) -> list[dict]:
        """Every promotion, oldest first."""
        return self._read()["history"]

    def entry(self, stage: str) -> dict:
        """The current entry of ``stage``; RegistryError when the stage is empty."""
        _check_stage(stage)
        entry = self.stages().get(stage)
        if entry is None:
            raise RegistryError(f"no {stage} model in {self.path}: promote a run first, e.g. "
                                f"{LAUNCHER} promote RUN_ID --as {stage}")
        return entry

    def run_dir(self, stage: str) -> Path:
        """The run directory serving as ``stage``; it must still exist."""
        entry = self.entry(stage)
        path = Path(entry["run_dir"])
        if not RunLayout(path).final_model.is_dir():
            raise RegistryError(f"the {stage} run {entry['run_id']} is gone: {path}/final_model "
                                "does not exist; promote another run")
        return path

    def promote(self, run_dir: str | os.PathLike, stage: str, reason: str = "",
                comparison: dict | None = None, promoted_by: str | None = None) -> dict:
        """Make ``run_dir`` the ``stage`` model and record it in the history; returns the entry."""
        _check_stage(stage)
        run_dir = Path(run_dir).resolve()
        if not RunLayout(run_dir).final_model.is_dir():
            raise RegistryError(f"{run_dir} has no final_model/: only a finished run directory "
                                "can be promoted")
        with self._exclusive():
            return self._record_promotion(run_dir, stage, reason, comparison, promoted_by)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One promotion at a time: two at once would each write back without the other's entry."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / LOCK_FILE, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, or the process dies
            yield

    def _record_promotion(self, run_dir: Path, stage: str, reason: str, comparison: dict | None,
                          promoted_by: str | None) -> dict:
        data = self._read()
        previous = data["stages"].get(stage)
        entry = {"stage": stage, "run_id": run_dir.name, "run_dir": str(run_dir),
                 "promoted_at": utc_now(), "promoted_by": promoted_by or current_user(),
                 "reason": reason, "metrics": run_metrics(run_dir),
                 "replaced_run_id": previous["run_id"] if previous else None,
                 "comparison": comparison}
        data["stages"][stage] = entry
        if stage == "production" and data["stages"].get("candidate", {}).get("run_id") == \
                entry["run_id"]:
            del data["stages"]["candidate"]  # a promoted candidate is no longer a candidate
        data["history"].append(entry)
        atomic_write_json(self.path, data)
        return entry


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise RegistryError(f"unknown stage {stage!r}; choose {' or '.join(STAGES)}")
