"""The one small interface every tracker implements, and the set the training loop talks to."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from ..fileio import append_jsonl
from ..metrics import EvaluationResult

logger = logging.getLogger(__name__)


class Tracker(Protocol):
    """What the training loop calls, once per log point. Every method may be a no-op."""

    def log_config(self, config: dict, run_info: dict) -> None:
        """The resolved config (plain dict) and run metadata, once at the start."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Scalars named ``train/...``, ``eval/...`` or ``test/...`` at an optimiser step."""

    def log_evaluation(self, evaluation: EvaluationResult, step: int) -> None:
        """A full evaluation (confusion matrix, probabilities, texts) for images, curves, samples."""

    def log_model_graph(self, model: Any, example_batch: dict) -> None:
        """The model and one input batch, for a traced graph."""

    def log_summary(self, results: dict, run_dir: Path) -> None:
        """Final results.json content and the run directory (hparams, plots, artifacts)."""

    def close(self, status: str) -> None:
        """Flush and finish; ``status`` is completed, failed or interrupted."""


class JsonlMetricsTracker:
    """Writes every log point to ``metrics.jsonl``: ``{"step": 10, "train/loss": 0.61, ...}``."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def log_config(self, config: dict, run_info: dict) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        append_jsonl(self.path, {"step": int(step), **metrics})

    def log_evaluation(self, evaluation: EvaluationResult, step: int) -> None:
        pass

    def log_model_graph(self, model: Any, example_batch: dict) -> None:
        pass

    def log_summary(self, results: dict, run_dir: Path) -> None:
        pass

    def close(self, status: str) -> None:
        pass


class TrackerSet:
    """Fans each call out to every tracker; a failing tracker warns once and is dropped,
    so tracking never kills or corrupts a training run."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = list(trackers)

    def _call(self, method: str, *args) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as error:  # noqa: BLE001 - a tracker must never stop training
                logger.warning("%s failed in %s (%s: %s); training goes on without it.",
                               type(tracker).__name__, method, type(error).__name__, error)
                self.trackers.remove(tracker)

    def log_config(self, config: dict, run_info: dict) -> None:
        self._call("log_config", config, run_info)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._call("log_metrics", metrics, step)

    def log_evaluation(self, evaluation: EvaluationResult, step: int) -> None:
        self._call("log_evaluation", evaluation, step)

    def log_model_graph(self, model: Any, example_batch: dict) -> None:
        self._call("log_model_graph", model, example_batch)

    def log_summary(self, results: dict, run_dir: Path) -> None:
        self._call("log_summary", results, run_dir)

    def close(self, status: str) -> None:
        self._call("close", status)
