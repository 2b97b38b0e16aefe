"""Stopping a run cleanly when the machine asks: SIGTERM (schedulers, spot reclaim), SIGINT
(Ctrl-C), SIGHUP (a closed terminal).

The first signal only raises a flag; the trainer finishes the optimisation step it is in, writes
a resumable checkpoint and stops. A second signal exits at once: checkpoints are written to a
temporary directory and renamed, so the last complete one is intact whatever moment it hits.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

# What signal.signal installs and returns: a function, SIG_DFL/SIG_IGN, or None (not set from
# Python).
SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class TrainingInterrupted(Exception):
    """A run stopped on a signal: at a training step after writing a resumable checkpoint, or
    in a ``phase`` before training (the teacher's pass), which ``resume`` starts again."""

    def __init__(self, signal_number: int, step: int, phase: str | None = None):
        self.signal_number = signal_number
        self.step = step
        self.checkpoint_written = phase is None
        self.run_dir: Path | None = None
        """The run to resume: the outermost run the interruption passed through (for a
        cross-validation fold, the cross-validation run)."""
        where = f"during {phase}" if phase else f"at step {step}"
        super().__init__(f"stopped by {signal.Signals(signal_number).name} {where}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number


class RunStopped(KeyboardInterrupt):
    """Ctrl-C where no training step could finish first (loading data or a model, between
    cross-validation folds): the run ``run_dir`` is marked interrupted and resumes from its last
    checkpoint, if any."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        super().__init__(f"stopped by the user (Ctrl-C); resume {run_dir}")


class RunPruned(Exception):
    """An evaluation hook stopped the run: a tuning pruner judged it hopeless at ``step``."""

    def __init__(self, step: int, reason: str):
        self.step = step
        super().__init__(f"pruned at step {step}: {reason}")


class StopRequests:
    """While entered, remembers the first of SIGTERM/SIGINT/SIGHUP instead of dying.

    >>> with StopRequests() as stop:  # doctest: +SKIP
    ...     while not stop.requested: train_one_step()
    """

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, SignalHandler] = {}

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        if self.signal_number is not None:
            sys.stderr.write(f"\n{signal.Signals(signal_number).name} again: exiting now; the "
                             f"last complete checkpoint is kept.\n")
            sys.stderr.flush()
            os._exit(128 + signal_number)
        self.signal_number = signal_number
        sys.stderr.write(f"\n{signal.Signals(signal_number).name}: stopping cleanly, at the "
                         f"end of this training step with a checkpoint once training has begun "
                         f"(send it again to exit at once).\n")
        sys.stderr.flush()

    def __enter__(self) -> StopRequests:
        # Handlers can only be installed from the main thread (a run inside a worker thread
        # keeps the default behaviour).
        if threading.current_thread() is threading.main_thread():
            for number in HANDLED_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
