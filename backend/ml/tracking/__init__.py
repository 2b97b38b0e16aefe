"""Experiment trackers behind one interface, chosen by name from the logging config.

Built-in names: ``jsonl`` (metrics.jsonl, always), ``plots`` (the run's PNGs, always),
``tensorboard`` (``logging.tensorboard``) and ``wandb`` (``logging.wandb``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..run_directory import RunLayout
from .base import JsonlMetricsTracker, Tracker, TrackerSet, flatten_config
from .plots import PlotsTracker, write_run_plots
from .registry import create_tracker, register_tracker, tracker_names

__all__ = ["JsonlMetricsTracker", "PlotsTracker", "Tracker", "TrackerSet", "build_trackers",
           "create_tracker", "enabled_tracker_names", "flatten_config", "register_tracker",
           "tracker_names", "write_run_plots"]

logger = logging.getLogger(__name__)


@register_tracker("jsonl")
def _jsonl(config, run_dir: Path) -> Tracker:
    return JsonlMetricsTracker(RunLayout(run_dir).metrics)


@register_tracker("plots")
def _plots(config, run_dir: Path) -> Tracker:
    return PlotsTracker()


@register_tracker("tensorboard")
def _tensorboard(config, run_dir: Path) -> Tracker:
    from .tensorboard_tracker import TensorBoardTracker
    return TensorBoardTracker(RunLayout(run_dir).logs,
                              prediction_samples=config.logging.prediction_samples)


@register_tracker("wandb")
def _wandb(config, run_dir: Path) -> Tracker:
    from .wandb_tracker import WandbTracker
    logging_config = config.logging
    return WandbTracker(run_dir, project=logging_config.wandb_project,
                        entity=logging_config.wandb_entity,
                        name=logging_config.wandb_run_name or run_dir.name,
                        tags=config.tags, description=config.description,
                        config=config.to_dict(), log_model=logging_config.wandb_log_model,
                        prediction_samples=logging_config.prediction_samples)


def enabled_tracker_names(config) -> list[str]:
    """The trackers a config switches on, in call order: plots come before W&B, which
    uploads them at ``log_summary``."""
    names = ["jsonl", "plots"]
    if config.logging.tensorboard:
        names.append("tensorboard")
    if config.logging.wandb:
        names.append("wandb")
    return names


def build_trackers(config, run_dir: Path) -> TrackerSet:
    """The tracker set for a run (``config`` is the ExperimentConfig): metrics.jsonl and plots
    always, plus those ``config.logging`` switches on. A tracker that cannot be built warns
    and is left out; the run goes on.

    >>> trackers = build_trackers(ExperimentConfig(),
    ...                           Path("experiments/runs/demo_1a2b3c"))  # doctest: +SKIP
    >>> trackers.log_metrics({"train/loss": 0.7}, step=10)  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    trackers: list[Tracker] = []
    for name in enabled_tracker_names(config):
        try:
            trackers.append(create_tracker(name, config, run_dir))
        except Exception as error:  # noqa: BLE001 - tracking never stops a run
            logger.warning("Tracker %r could not start (%s: %s); the run goes on without it.",
                           name, type(error).__name__, error)
    return TrackerSet(trackers)
