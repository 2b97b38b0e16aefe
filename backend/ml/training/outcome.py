"""How a run that did not complete is written down: one rule for fine-tuning and pre-training.

Whatever stops a run (a signal, a pruner, Ctrl-C outside the training loop, an error) lands in its
results.json as ``interrupted``, ``pruned`` or ``failed`` with what happened, before it is
re-raised to the command line. A stop the run can go on from (a signal, Ctrl-C, a checkpoint the
disk refused) carries the directory to resume: the outermost run it passed through.

>>> with failures_recorded(run_dir, results):  # doctest: +SKIP
...     train()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ..errors import ResumableError
from ..run_directory import utc_now, write_results
from .interruption import RunPruned, RunStopped, TrainingInterrupted


def record_outcome(run_dir: Path, results: dict, status: str, message: str | None = None,
                   **details) -> None:
    """Set the run's final ``status`` (and error message, and details) and write results.json."""
    results.update(status=status, error=message, **details)
    results["metadata"]["finished_at"] = utc_now()
    write_results(run_dir, results)


@contextlib.contextmanager
def failures_recorded(run_dir: Path, results: dict, writes: bool = True) -> Iterator[None]:
    """Whatever stops the block is written to results.json (by the process that ``writes``),
    then re-raised."""
    try:
        yield
    except TrainingInterrupted as interruption:
        interruption.run_dir = run_dir  # an enclosing run, recorded later, names itself instead
        if writes:
            record_outcome(run_dir, results, "interrupted", str(interruption),
                           interrupted_at_step=interruption.step)
        raise
    except RunPruned as pruned:
        if writes:
            record_outcome(run_dir, results, "pruned", str(pruned), pruned_at_step=pruned.step)
        raise
    except KeyboardInterrupt:
        if writes:
            record_outcome(run_dir, results, "interrupted", "stopped by the user (Ctrl-C)")
        raise RunStopped(run_dir) from None  # as above: an enclosing run names itself instead
    except Exception as error:
        if isinstance(error, ResumableError):
            error.run_dir = run_dir  # as above
        if writes:
            record_outcome(run_dir, results, "failed", f"{type(error).__name__}: {error}")
        raise
