"""Reading one run directory into a :class:`RunInfo`, whatever state it was left in.

A run directory may be complete, still running, failed, interrupted, crashed, half-copied or
damaged; reading it never raises. Problems become ``status`` ``incomplete`` or ``corrupt`` with a
``reason`` a user can act on; a ``running`` run whose process is gone becomes ``crashed``
(see :func:`backend.ml.run_status.effective_status`).
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

import yaml

from ..fileio import read_jsonl
from ..metrics import is_number
from ..run_directory import RunLayout
from ..run_status import CRASHED, effective_status

RUN_STATUSES = ("running", "completed", "failed", "interrupted", "pruned")
# What a reader can say on top of the trainer's own statuses.
READER_STATUSES = ("incomplete", "corrupt", CRASHED)


@dataclass
class RunInfo:
    """One run directory as the experiment tools see it.

    >>> run = RunInfo.read(Path("experiments/runs/bert_baseline_v1_abc123"))  # doctest: +SKIP
    >>> run.status, run.metric("test/f1_macro")                                # doctest: +SKIP
    ('completed', 0.79)
    """

    run_id: str
    path: Path
    status: str
    reason: str | None = None
    config: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    folds: list[RunInfo] = field(default_factory=list)
    parent_id: str | None = None
    resumable: bool = False

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def read(cls, path: Path, run_id: str | None = None, parent_id: str | None = None
             ) -> RunInfo:
        """Read ``path``; never raises for missing or damaged files."""
        path = Path(path)
        run = cls(run_id=run_id or path.name, path=path, status="incomplete",
                  parent_id=parent_id)
        problems: list[str] = []
        layout = RunLayout(path)
        run.config = _read_config(layout.config, problems)
        results_file = layout.results
        if not results_file.is_file():
            run.reason = ("results.json is missing: the run never started writing results or the "
                          "directory was copied partially")
        else:
            try:
                results = json.loads(results_file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as error:
                run.status, run.reason = "corrupt", f"results.json cannot be read: {error}"
                results = None
            if results is not None and not isinstance(results, dict):
                run.status, run.reason = "corrupt", "results.json does not hold a JSON object"
            elif isinstance(results, dict):
                run.results = results
                run.status, run.reason = _status_of(results)
                if run.status in ("running", "interrupted"):
                    actual = effective_status(path, run.status)
                    run.status, run.resumable = actual.status, actual.resumable
                    run.reason = actual.reason or run.reason
        folds_dir = layout.folds
        if folds_dir.is_dir():
            fold_dirs = sorted((item for item in folds_dir.iterdir() if item.is_dir()),
                               key=_fold_sort_key)
            run.folds = [cls.read(item, f"{run.run_id}/{item.name}", parent_id=run.run_id)
                         for item in fold_dirs]
        if problems and run.reason is None and run.status == "completed":
            run.reason = "; ".join(problems)
        return run

    # ---- what the run says --------------------------------------------------------------

    @property
    def experiment_name(self) -> str:
        return str(self.results.get("experiment_name") or self.config.get("experiment_name")
                   or self.run_id)

    @property
    def tags(self) -> list[str]:
        tags = self.results.get("tags", self.config.get("tags")) or []
        return [str(tag) for tag in tags] if isinstance(tags, list) else [str(tags)]

    @property
    def description(self) -> str:
        return str(self.results.get("description") or self.config.get("description") or "")

    @property
    def started_at(self) -> str:
        metadata = self.results.get("metadata")
        return str(metadata.get("started_at") or "") if isinstance(metadata, dict) else ""

    @property
    def fixed_split_seed(self) -> int | None:
        """data.split_seed: the seed that fixed the run's splits apart from its own seed (None
        when the run's seed drew them)."""
        data = self.config.get("data")
        return data.get("split_seed") if isinstance(data, dict) else None

    @property
    def split_seed(self) -> int | None:
        """The seed that drew the run's splits and folds: data.split_seed, else its seed (None
        when the config does not say)."""
        fixed = self.fixed_split_seed
        seed = self.config.get("seed") if fixed is None else fixed
        return seed if isinstance(seed, int) else None

    @property
    def is_cross_validation(self) -> bool:
        return bool(self.folds) or isinstance(self.results.get("cross_validation"), dict)

    @property
    def cross_validation(self) -> dict:
        value = self.results.get("cross_validation")
        return value if isinstance(value, dict) else {}

    @property
    def label_names(self) -> list[str]:
        for section in ("test", "eval"):
            names = _section(self.results, section).get("label_names")
            if isinstance(names, list) and names:
                return [str(name) for name in names]
        names = _section(self.results, "data").get("label_names")
        if isinstance(names, list) and names:
            return [str(name) for name in names]
        for fold in self.folds:
            if fold.label_names:
                return fold.label_names
        return []

    @property
    def paths(self) -> dict[str, Path]:
        """Where each artifact of the run lives (whether or not it exists yet)."""
        layout = RunLayout(self.path)
        return {"run_dir": self.path, "config": layout.config, "results": layout.results,
                "metrics": layout.metrics, "test_predictions": layout.test_predictions,
                "eval_predictions": layout.eval_predictions, "plots": layout.plots,
                "final_model": layout.final_model, "folds": layout.folds}

    def metric(self, name: str) -> float | None:
        """Value of ``eval/f1_macro`` (``results["eval"]["f1_macro"]``), ``test/...``, or None.

        A CV parent's ``eval``/``test`` hold the fold means; when they are missing the means
        are read from ``cross_validation``.
        """
        split, _, key = name.partition("/")
        if not key:
            split, key = "test", split
        value = _section(self.results, split).get(key)
        if _finite(value):
            return float(value)
        mean = self.cross_validation.get("mean")
        if isinstance(mean, dict) and _finite(mean.get(f"{split}/{key}")):
            return float(mean[f"{split}/{key}"])
        return None

    def metric_std(self, name: str) -> float | None:
        """Standard deviation over folds of ``name`` for a cross-validation run, else None."""
        if "/" not in name:
            name = f"test/{name}"
        std = self.cross_validation.get("std")
        if isinstance(std, dict) and _finite(std.get(name)):
            return float(std[name])
        return None

    def scalar_metrics(self) -> dict[str, float]:
        """Every numeric ``eval/...`` and ``test/...`` metric of the run."""
        names = set()
        for split in ("eval", "test"):
            names |= {f"{split}/{key}" for key, value in _section(self.results, split).items()
                      if _finite(value)}
        mean = self.cross_validation.get("mean")
        if isinstance(mean, dict):
            names |= {key for key, value in mean.items() if _finite(value)}
        values = {name: self.metric(name) for name in sorted(names)}
        return {name: value for name, value in values.items() if value is not None}

    def learning_curves(self) -> list[dict]:
        """The log points of ``metrics.jsonl`` (a torn last line is skipped); [] when absent."""
        path = self.paths["metrics"]
        if not path.is_file():
            return []
        try:
            return read_jsonl(path)
        except (OSError, UnicodeDecodeError):
            return []

    @property
    def display_status(self) -> str:
        """The status as tables show it, e.g. ``crashed (resumable)``."""
        return self.status + (" (resumable)" if self.resumable else "")

    def summary(self) -> dict:
        """A flat, printable description: id, status, name, tags and the headline metrics."""
        return {"run_id": self.run_id, "status": self.status, "reason": self.reason,
                "resumable": self.resumable,
                "experiment_name": self.experiment_name, "tags": self.tags,
                "cross_validation": self.is_cross_validation,
                "eval/f1_macro": self.metric("eval/f1_macro"),
                "test/f1_macro": self.metric("test/f1_macro"),
                "test/accuracy": self.metric("test/accuracy"), "path": str(self.path)}

    def __str__(self) -> str:
        f1 = self.metric("test/f1_macro")
        shown = f"test/f1_macro={f1:.4f}" if f1 is not None else "no test metrics"
        return f"{self.run_id} [{self.display_status}] {shown}"


def _section(results: dict, name: str) -> dict:
    value = results.get(name)
    return value if isinstance(value, dict) else {}


def _status_of(results: dict) -> tuple[str, str | None]:
    status = results.get("status")
    if status not in RUN_STATUSES:
        return "corrupt", f"results.json has an unknown status {status!r}"
    if status == "failed":
        return "failed", str(results.get("error") or "the run failed (no error recorded)")
    if status == "interrupted":
        return "interrupted", str(results.get("error") or "the run was interrupted before the end")
    if status == "running":
        return "running", "results.json still says running (in progress, or the process died)"
    if status == "pruned":
        return "pruned", str(results.get("error") or "a tuning pruner stopped the trial early")
    has_test = bool(_section(results, "test")) or isinstance(results.get("cross_validation"),
                                                             dict)
    if not has_test and _section(results, "tuning").get("role") == "trial":
        return "completed", None  # trials are scored on validation only, by design
    if not has_test:
        return "incomplete", "results.json says completed but holds no test metrics"
    return "completed", None


def _read_config(path: Path, problems: list[str]) -> dict:
    if not path.is_file():
        problems.append("config.yaml is missing")
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        problems.append(f"config.yaml cannot be read: {error.__class__.__name__}")
        return {}
    return data if isinstance(data, dict) else {}


def _fold_sort_key(path: Path):
    digits = "".join(character for character in path.name if character.isdigit())
    return (int(digits) if digits else 0, path.name)


def _finite(value: object) -> TypeGuard[numbers.Real]:
    return is_number(value, finite=True)
