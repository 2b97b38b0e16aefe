"""One lifecycle for every kind of run: setup -> train -> finish.

Fine-tuning, a cross-validation parent, pre-training and retraining differ in model, data and
loss, not in how their run directory is opened, locked, tracked, interrupted and finished. A
``RunSession`` owns all of that (as torchtune's recipes share ``setup`` / ``train`` /
``cleanup``); the job hands it sections of results.json and a trainer.

- **setup**: the run directory (created, or reopened by ``resume``), its lock (held by the main
  process until results.json is final), the signal handlers (a signal at any point stops at the
  next optimiser step with a checkpoint), ``config.yaml``, the results header
  (:class:`~backend.ml.run_directory.ResultsHeader`, ``status: running``) and the trackers.
- **train**: inside ``recording()``, whatever stops the run lands in results.json as
  ``interrupted`` (with the step), ``pruned`` or ``failed`` before it reaches the command line,
  which prints how to resume and exits with 128 + the signal.
- **finish**: ``complete(...)`` writes the final results.json and the trackers' summary; leaving
  the session closes the trackers with the run's status and releases the lock.

Only the main process writes; every process runs the same calls.

>>> with RunSession.create(config, world, "experiments/runs", None, FINETUNING) as session:
...     session.begin(model=info, data=summary)  # doctest: +SKIP
...     with session.recording():
...         outcome = Trainer(objective, ...).train(session.stop)
...         session.complete(training=...)
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from ..config import ExperimentConfig
from ..errors import UserError
from ..fileio import atomic_write_text, read_jsonl
from ..run_directory import (
    ResultsHeader,
    RunLayout,
    create_run_directory,
    read_results_or_empty,
    utc_now,
    write_results,
)
from ..run_lock import RunLock
from ..tracking import TrackerSet, build_trackers
from .distributed import World
from .interruption import StopRequests
from .outcome import failures_recorded


def create_run_directory_on_main(world: World, output_dir: str | Path, experiment_name: str,
                                 run_id: str | None) -> Path:
    """The main process creates the directory and tells the others; its refusal stops them all."""
    created: tuple[str | None, str | None] = (None, None)
    if world.is_main:
        try:
            created = (str(create_run_directory(output_dir, experiment_name, run_id)), None)
        except UserError as error:
            created = (None, str(error))
    path, problem = world.broadcast(created)
    if problem:
        raise UserError(problem)
    return Path(path)


class RunSession:
    """The run directory, lock, signals, results.json and trackers of one run."""

    def __init__(self, config: ExperimentConfig, world: World, run_dir: Path, stage: str,
                 action: str, handles_signals: bool = True):
        self.config, self.world, self.run_dir = config, world, Path(run_dir)
        self.layout = RunLayout(self.run_dir)
        self.action = action
        """``train`` (a new directory) or ``resume`` (an existing one)."""
        header = ResultsHeader.for_run(self.run_dir, config.experiment_name, config.description,
                                       list(config.tags), stage, str(world.device), world.size)
        self.results: dict[str, Any] = header.results()
        self.trackers = TrackerSet([])
        self.stop = StopRequests()
        # A cross-validation parent trains nothing itself: its folds' sessions take the signals.
        self.handles_signals = handles_signals
        self._exit = contextlib.ExitStack()

    @classmethod
    def create(cls, config: ExperimentConfig, world: World, output_dir: str | Path | None,
               run_id: str | None, stage: str) -> RunSession:
        """A session in a new run directory under ``output_dir`` (the config's by default)."""
        run_dir = create_run_directory_on_main(world, output_dir or config.output_dir,
                                               config.experiment_name, run_id)
        return cls(config, world, run_dir, stage, "train")

    @classmethod
    def reopen(cls, config: ExperimentConfig, world: World, run_dir: Path, stage: str,
               handles_signals: bool = True) -> RunSession:
        """A session continuing ``run_dir`` (``resume``) as the ``stage`` it was started as
        (``stage`` when results.json does not say); entering it refuses a live run."""
        stage = read_results_or_empty(run_dir).get("stage", stage)
        return cls(config, world, run_dir, stage, "resume", handles_signals)

    def __enter__(self) -> RunSession:
        if self.world.is_main:  # the only process that writes there
            self._exit.enter_context(RunLock(self.run_dir, action=self.action))
        if self.handles_signals:
            self._exit.enter_context(self.stop)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            status = self.results["status"]
            self.trackers.close(status if status != "running" else "failed")
        finally:
            self._exit.close()

    def earlier_results(self) -> dict:
        """results.json as the run left it (a resumed run reads its first records back)."""
        return read_results_or_empty(self.run_dir)

    def begin(self, track: bool = True, **sections: Any) -> None:
        """Record the run's start: ``config.yaml`` (a new run), results.json with ``sections``
        (``model``, ``data`` ...) and ``status: running``, and the trackers."""
        self.results.update(sections)
        if self.world.is_main:
            if self.action == "train":
                self.config.save_yaml(self.layout.config)
            write_results(self.run_dir, self.results)
            if track:
                self.trackers = build_trackers(self.config, self.run_dir)
        self.trackers.log_config(self.config.to_dict(),
                                 {key: self.results[key] for key in
                                  ("experiment_id", "metadata", "model", "data")
                                  if key in self.results})
        self.world.barrier()

    def record(self, **sections: Any) -> None:
        """Add ``sections`` to results.json now (a run's first measurements, read on resume)."""
        self.results.update(sections)
        if self.world.is_main:
            write_results(self.run_dir, self.results)

    def rewind_metrics(self, step: int | None) -> None:
        """Before a resumed run begins: metrics.jsonl keeps the points up to ``step`` (the
        checkpoint's; the resumed run logs the later ones again), or none at all."""
        metrics = self.layout.metrics
        if not self.world.is_main or not metrics.is_file():
            return
        if step is None:
            metrics.unlink()
            return
        kept = [record for record in read_jsonl(metrics) if record.get("step", 0) <= step]
        atomic_write_text(metrics, "".join(json.dumps(record) + "\n" for record in kept))

    def recording(self) -> contextlib.AbstractContextManager[None]:
        """Whatever stops the block is written to results.json, then re-raised."""
        return failures_recorded(self.run_dir, self.results, writes=self.world.is_main)

    def complete(self, **sections: Any) -> None:
        """The run completed: results.json gets ``sections``, ``status: completed`` and the
        finishing time; the trackers get the summary."""
        self.results.update(sections, status="completed")
        self.results["metadata"]["finished_at"] = utc_now()
        if self.world.is_main:
            write_results(self.run_dir, self.results)
            self.trackers.log_summary(self.results, self.run_dir)
