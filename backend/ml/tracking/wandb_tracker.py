"""Weights & Biases: the same metrics on the same step axis, the config, tags and description,
confusion matrices, prediction samples and per-class tables, the plots, and optionally the final
model as an artifact.

Without an API key (``WANDB_API_KEY`` or a ``~/.netrc`` entry) the run is logged offline into
the run directory and can be uploaded later with ``wandb sync``. ``wandb`` is imported here only,
when a run asks for it.
"""

from __future__ import annotations

import logging
import netrc
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from ..metrics import EvaluationResult, numeric_items
from ..run_directory import RunLayout
from .base import plain_data

if TYPE_CHECKING:
    from wandb import Run

logger = logging.getLogger(__name__)

DEFAULT_HOST = "https://api.wandb.ai"


def has_api_key(environ: Mapping[str, str] | None = None) -> bool:
    """Whether W&B credentials are available: ``WANDB_API_KEY`` or a netrc entry for the
    W&B host. Only presence is checked; the key itself is never read into a log or a file."""
    if environ is None:
        environ = os.environ
    if environ.get("WANDB_API_KEY", "").strip():
        return True
    host = urlparse(environ.get("WANDB_BASE_URL") or DEFAULT_HOST).hostname or "api.wandb.ai"
    path = environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def choose_mode(environ: Mapping[str, str] | None = None) -> Literal["online", "offline"] | None:
    """``None`` when the user set ``WANDB_MODE`` (wandb reads it), ``online`` with credentials,
    else ``offline``."""
    if environ is None:
        environ = os.environ
    if environ.get("WANDB_MODE"):
        return None
    return "online" if has_api_key(environ) else "offline"


def _artifact_name(text: str) -> str:
    # Artifact names allow letters, digits, '-', '_' and '.'.
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


class WandbTracker:
    """One W&B run per experiment run, its files under ``<run_dir>/wandb/``.

    The run starts at ``log_config`` (or at the first logged metric). A failure anywhere is left
    to :class:`TrackerSet`, which warns once, drops this tracker and keeps training.
    """

    def __init__(self, run_dir: Path, project: str, entity: str | None = None,
                 name: str | None = None, tags: list[str] | None = None,
                 description: str = "", config: dict | None = None,
                 log_model: bool = False, prediction_samples: int = 20):
        self.run_dir = Path(run_dir)
        self.project = project
        self.entity = entity or None
        self.name = name or self.run_dir.name
        self.tags = list(tags or [])
        self.description = description
        self.config = dict(config or {})
        self.log_model = log_model
        self.prediction_samples = prediction_samples
        self.run: Run | None = None
        self.offline = False
        self.closed = False

    # -- starting -----------------------------------------------------------------------------
    def _init(self, mode: Literal["online", "offline"] | None) -> Run:
        import wandb
        # console off: W&B does not wrap stdout/stderr (the CLI's own output stays as is).
        # A short init timeout: without a network the run falls back to offline quickly.
        settings = wandb.Settings(console="off", silent=True, init_timeout=30)
        if mode == "offline":
            # The process-wide settings too: W&B's own usage analytics read those, not the
            # run's, and would otherwise keep trying to reach its servers in the background.
            wandb.setup(settings=wandb.Settings(mode="offline"))
        return wandb.init(project=self.project, entity=self.entity, name=self.name,
                          tags=self.tags, notes=self.description or None, config=self.config,
                          dir=str(self.run_dir), mode=mode, settings=settings)

    def _start(self) -> None:
        if self.run is not None or self.closed:
            return
        mode = choose_mode()
        if mode == "online":
            try:
                self.run = self._init("online")
            except Exception as error:  # noqa: BLE001 - no network: fall back to offline
                logger.warning("W&B could not start online (%s: %s); logging offline instead.",
                               type(error).__name__, error)
                mode = "offline"
        if self.run is None:
            self.run = self._init(mode)
        self.offline = self.run.offline or mode == "offline"
        if self.offline:
            logger.warning("W&B logs offline (no API key or no network) to %s; upload it later "
                           "with: wandb sync %s", self.sync_path, self.sync_path)
        else:
            logger.info("W&B run: %s", getattr(self.run, "url", None) or self.run.id)

    def _started_run(self) -> Run:
        self._start()
        if self.run is None:
            raise RuntimeError("the W&B run was closed before anything was logged")
        return self.run

    @property
    def sync_path(self) -> Path | None:
        """The offline run folder ``wandb sync`` uploads (``<run_dir>/wandb/offline-run-...``)."""
        if self.run is None:
            return None
        return Path(self.run.dir).parent  # run.dir is the run folder's files/

    # -- the protocol -------------------------------------------------------------------------
    def log_config(self, config: dict, run_info: dict) -> None:
        self.config = plain_data({**config, "run_info": dict(run_info or {})})
        if self.run is None:
            self._start()
        else:
            self.run.config.update(self.config, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._started_run().log(numeric_items(metrics), step=int(step))

    def log_evaluation(self, evaluation: EvaluationResult, step: int) -> None:
        import wandb
        run = self._started_run()
        split = evaluation.split
        names = evaluation.label_names
        per_class = wandb.Table(columns=["class", "precision", "recall", "f1", "support"])
        for name, scores in evaluation.metrics["per_class"].items():
            per_class.add_data(name, scores["precision"], scores["recall"], scores["f1"],
                               scores["support"])
        payload: dict[str, Any] = {
            f"{split}/per_class": per_class,
            f"{split}/confusion_matrix": wandb.plot.confusion_matrix(
                y_true=evaluation.labels.tolist(), preds=evaluation.predictions.tolist(),
                class_names=names, title=f"{split} confusion matrix"),
        }
        if self.prediction_samples:
            samples = wandb.Table(columns=["text", "true_label", "predicted_label",
                                           "confidence", "correct"])
            for sample in evaluation.samples(self.prediction_samples):
                samples.add_data(sample["text"], sample["true_label"],
                                 sample["predicted_label"], sample["confidence"],
                                 sample["correct"])
            payload[f"{split}/predictions"] = samples
        run.log(payload, step=int(step))

    def log_model_graph(self, model: Any, example_batch: dict) -> None:
        pass  # W&B has no static graph view worth the cost; TensorBoard shows it.

    def log_summary(self, results: dict, run_dir: Path) -> None:
        import wandb
        run = self._started_run()
        summary: dict[str, Any] = {}
        for split in ("eval", "test"):  # eval: the best checkpoint, as in results.json
            if isinstance(results.get(split), dict):
                summary.update({f"{split}/{key}": value
                                for key, value in numeric_items(results[split]).items()})
        for section in ("training", "timing"):
            if isinstance(results.get(section), dict):
                summary.update({f"{section}/{key}": value
                                for key, value in results[section].items()
                                if isinstance(value, (int, float, str, bool))})
        summary["status"] = results.get("status")
        run.summary.update(summary)
        images = {f"plots/{path.stem}": wandb.Image(str(path))
                  for path in sorted(RunLayout(Path(run_dir)).plots.glob("*.png"))}
        if images:
            run.log(images, commit=False)
        final_model = RunLayout(Path(run_dir)).final_model
        if self.log_model and final_model.is_dir():
            artifact = wandb.Artifact(_artifact_name(f"{self.name}-model"), type="model",
                                      description=self.description or None,
                                      metadata={key: value for key, value in summary.items()
                                                if key.startswith("test/")})
            artifact.add_dir(str(final_model))
            run.log_artifact(artifact)

    def close(self, status: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self.run is None:
            return
        self.run.finish(exit_code=0 if status == "completed" else 1)
        if self.offline:
            self._wait_for_offline_file()
            logger.info("W&B offline run saved; upload it with: wandb sync %s", self.sync_path)

    @staticmethod
    def _wait_for_offline_file() -> None:
        """``finish()`` only tells W&B's service process that the run is over; the service
        writes the run's last records (the final step's history row among them) to the offline
        file afterwards. Shutting the service down waits for that, so the folder is complete
        when the log says it can be synced; the next run starts a new service."""
        import wandb
        try:
            wandb.teardown()
        except SystemExit as error:  # wandb exits the process when its service failed
            logger.warning("W&B's service ended with exit code %s; the offline run may be "
                           "incomplete.", error.code)
