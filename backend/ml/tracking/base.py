"""The one small interface every tracker implements, and the set the training loop talks to."""

from __future__ import annotations

import json
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
        """A full evaluation (confusion matrix, probabilities, texts): images, curves, samples."""

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


def _close_quietly(tracker: Tracker) -> None:
    # A dropped tracker still releases what it holds (event files, a W&B process).
    try:
        tracker.close("failed")
    except Exception:  # noqa: BLE001 - already warned once about this tracker
        logger.debug("closing %s after its failure failed too", type(tracker).__name__,
                     exc_info=True)


def flatten_config(config: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config as dotted keys with scalar values (lists and None become text).

    >>> flatten_config({"model": {"dropout": 0.1, "model_name": None}, "tags": ["a", "b"]})
    {'model.dropout': 0.1, 'model.model_name': 'None', 'tags': 'a,b'}
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(str(item) for item in value)
        elif value is None or not isinstance(value, (bool, int, float, str)):
            flat[name] = str(value)
        else:
            flat[name] = value
    return flat


def plain_data(data: Any) -> Any:
    """``data`` as JSON-able builtins (str subclasses, numpy scalars, paths become plain)."""
    return json.loads(json.dumps(data, default=str))


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
                if method != "close":
                    _close_quietly(tracker)

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
