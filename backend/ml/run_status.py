"""What state a run is really in: results.json's status, corrected by its heartbeat.

A run killed with SIGKILL, by a power loss or an out-of-memory killer never gets to update its
results.json, which keeps saying ``running``. :func:`effective_status` is the one place that
turns such a run into ``crashed`` (resumable when a valid step checkpoint exists); the
experiment tools and the cloud status use it. No torch, no trainer.

>>> effective_status(Path("experiments/runs/tiny_3f9a1c"))  # doctest: +SKIP
EffectiveStatus(status='crashed', reason='the process stopped ...', resumable_from=PosixPath('...'))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .checkpoint_files import step_checkpoints
from .run_directory import RunLayout, read_results_or_empty
from .run_lock import STALE_AFTER_SECONDS, read_heartbeat

CRASHED = "crashed"


@dataclass(frozen=True)
class EffectiveStatus:
    """A run's status as a user should see it, why, and where it would resume from."""

    status: str
    reason: str | None = None
    resumable_from: Path | None = None

    @property
    def resumable(self) -> bool:
        return self.resumable_from is not None


def _recorded_status(run_dir: Path) -> str | None:
    results = read_results_or_empty(run_dir)
    return results.get("status") if isinstance(results, dict) else None


def _resume_point(run_dir: Path) -> Path | None:
    # Sizes only: listing runs must stay fast; resuming verifies the checksums itself.
    valid = step_checkpoints(RunLayout(run_dir).checkpoints, verify_checksums=False)
    return valid[-1] if valid else None


def effective_status(run_dir: str | os.PathLike, recorded: str | None = None,
                     stale_after: float = STALE_AFTER_SECONDS) -> EffectiveStatus:
    """``recorded`` (default: results.json's status) unless the run's process is gone.

    ``running`` with no live heartbeat (its pid gone on this host, or no beat for
    ``stale_after`` seconds) becomes ``crashed``; ``crashed`` and ``interrupted`` runs carry the
    checkpoint ``resume`` would continue from, if any. Other statuses pass through unchanged.

    >>> effective_status(run_dir).status  # doctest: +SKIP
    'crashed'
    """
    run_dir = Path(run_dir)
    status = recorded if recorded is not None else _recorded_status(run_dir)
    if status == "interrupted":
        return EffectiveStatus(status, None, _resume_point(run_dir))
    if status != "running":
        return EffectiveStatus(str(status), None, None)
    heartbeat = read_heartbeat(run_dir)
    if heartbeat is not None and heartbeat.is_live(stale_after):
        return EffectiveStatus("running", f"in progress: {heartbeat.describe()}", None)
    who = (f" (pid {heartbeat.pid} on host {heartbeat.host}, last heartbeat "
           f"{heartbeat.last_beat.isoformat(timespec='seconds')})" if heartbeat else "")
    checkpoint = _resume_point(run_dir)
    if checkpoint is not None:
        advice = (f"resumable from {checkpoint.name}: python run_experiment.py resume "
                  f"{run_dir}")
    else:
        advice = ("not resumable (no valid step checkpoint); `run_experiment.py resume` starts it "
                  "over in the same directory")
    return EffectiveStatus(CRASHED, f"the process stopped without finishing{who}; {advice}",
                           checkpoint)
