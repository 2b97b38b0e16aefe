"""Trackers by name: a dict behind a decorator, filled by the modules that define trackers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .base import Tracker

TrackerFactory = Callable[..., Tracker]  # (experiment config, run directory) -> tracker

_TRACKERS: dict[str, TrackerFactory] = {}


def register_tracker(name: str) -> Callable[[TrackerFactory], TrackerFactory]:
    """Register ``factory(config, run_dir) -> Tracker`` under ``name``.

    >>> @register_tracker("stdout")  # doctest: +SKIP
    ... def _stdout(config, run_dir):
    ...     return StdoutTracker()
    """
    def decorator(factory: TrackerFactory) -> TrackerFactory:
        if name in _TRACKERS:
            raise ValueError(f"A tracker named {name!r} is already registered.")
        _TRACKERS[name] = factory
        return factory
    return decorator


def tracker_names() -> list[str]:
    """Every registered tracker name, sorted."""
    return sorted(_TRACKERS)


def create_tracker(name: str, config, run_dir: Path) -> Tracker:
    """The tracker registered as ``name``, built for this config and run directory."""
    if name not in _TRACKERS:
        raise ValueError(f"Unknown tracker {name!r}; registered: {', '.join(tracker_names())}.")
    return _TRACKERS[name](config, Path(run_dir))
