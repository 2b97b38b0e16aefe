"""The trainer: a small object with a typed state and one named method per step.

Read ``train`` first: it is the whole loop. Around it, ``_train_micro_batch`` (forward and
backward on one batch), ``_optimizer_step`` (clip, step, schedule), ``_evaluate`` (validation,
best model, early stopping) and ``_save_checkpoint``. What is trained comes from an
:class:`~.objective.Objective` (a model, its data and its loss): fine-tuning a classifier
(``ClassifierTrainer``) and masked-language-model pre-training run through this one loop, so both
resume exactly, checkpoint on a signal and train data-parallel. Distributed data parallel changes
only three things, all visible here: the model is wrapped in DDP, the sampler hands each process
its share of every global batch, and only the main process writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..config import ExperimentConfig
from ..data import DataSplits
from ..errors import LAUNCHER, ResumableError, UserError
from ..metrics import EvaluationResult
from ..models import set_attention
from ..run_directory import RunLayout
from ..tracking import TrackerSet
from .batching import LengthGroupedBatchSampler, TrainingBatch, build_train_loader
from .checkpoints import restore_rng_state, rng_state, write_checkpoint
from .classification import ClassificationObjective
from .distributed import World
from .evaluation import move_to
from .interruption import StopRequests, TrainingInterrupted
from .objective import Evaluation, Objective
from .optimization import build_optimizer, build_scheduler
from .precision import Precision, enable_tf32, resolve_attention
from .recipes import WeightAverage
from .steps import optimizer_steps_per_epoch, planned_steps

logger = logging.getLogger(__name__)

LOWER_IS_BETTER = {"loss"}
TRANSIENT = {"transient": True}  # a TrainingState field that checkpoints leave out


@dataclass
class LogInterval:
    """Since the last log point: this process's loss sum and sentences, the global batch's
    samples, the seconds of training work (evaluations and checkpoints excluded) and the
    auxiliary loss (the biased-word tagger's) over the micro-batches that had one."""

    loss: torch.Tensor
    auxiliary_loss: torch.Tensor
    sentences: int = 0
    samples: int = 0
    seconds: float = 0.0
    auxiliary_batches: int = 0

    @classmethod
    def start(cls, device: torch.device) -> LogInterval:
        return cls(torch.zeros((), device=device), torch.zeros((), device=device))


@dataclass
class TrainingState:
    """Where training stands. Every field but the transient ones is saved in each checkpoint,
    so a resumed run continues exactly."""

    global_step: int = 0
    epoch: int = 0
    micro_batches_done: int = 0
    """Micro-batches of the current epoch already trained."""
    best_value: float | None = None
    best_step: int = 0
    best_epoch: float = 0.0
    evaluations_without_improvement: int = 0
    stopped_early: bool = False
    final_train_loss: float | None = None
    """The mean training loss of the last log interval."""
    train_samples: int = 0
    train_seconds: float = 0.0
    """Forward, backward and optimiser work only; evaluations and checkpoints count apart."""
    eval_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    weight_average: dict | None = None
    """With training.average_last_checkpoints: the steps averaged, their validation score,
    whether the average became the best model."""
    best_evaluation: Any = field(default=None, metadata=TRANSIENT)
    """The best validation evaluation of this process's life (a resumed run re-evaluates)."""
    grad_norm: float = field(default=0.0, metadata=TRANSIENT)
    last_checkpoint_time: float = field(default_factory=time.monotonic, metadata=TRANSIENT)
    interval: LogInterval | None = field(default=None, metadata=TRANSIENT)

    def checkpointed(self) -> dict:
        """The fields a checkpoint keeps."""
        return {item.name: getattr(self, item.name) for item in dataclasses.fields(self)
                if not item.metadata.get("transient")}

    @classmethod
    def restored(cls, saved: dict) -> TrainingState:
        """The state a checkpoint kept (fields added since it was written take defaults)."""
        names = {item.name for item in dataclasses.fields(cls)
                 if not item.metadata.get("transient")}
        return cls(**{key: value for key, value in saved.items() if key in names})


@dataclass
class TrainingOutcome:
    """What training hands back: the best validation result and how training went."""

    best_evaluation: Any
    """An EvaluationResult for a classifier; None when no validation evaluation was kept."""
    state: TrainingState
    epochs_completed: float

    @property
    def stopped_early(self) -> bool:
        return self.state.stopped_early

    @property
    def final_train_loss(self) -> float | None:
        return self.state.final_train_loss

    @property
    def weight_average(self) -> dict | None:
        return self.state.weight_average

    @property
    def train_samples_per_second(self) -> float:
        return self.state.train_samples / max(self.state.train_seconds, 1e-9)


class NonFiniteLoss(UserError):
    """The loss or gradients became NaN or infinite; the step was not applied."""


def is_improvement(value: float, best: float | None, metric: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if metric in LOWER_IS_BETTER else value > best


# Called after each validation evaluation with (step, metrics); raising RunPruned stops the run.
EvaluationHook = Callable[[int, dict], None]


class Trainer:
    """Trains ``objective`` (a model, its data and loss), selecting on its validation score.

    >>> trainer = Trainer(objective, config, run_dir, trackers, world, precision)  # doctest: +SKIP
    >>> outcome = trainer.train()  # doctest: +SKIP
    """

    def __init__(self, objective: Objective, config: ExperimentConfig, run_dir: Path,
                 trackers: TrackerSet, world: World, precision: Precision,
                 resume_state: dict | None = None,
                 evaluation_hook: EvaluationHook | None = None):
        self.objective, self.config, self.training = objective, config, config.training
        self.evaluation_hook = evaluation_hook
        self.trackers, self.world, self.precision = trackers, world, precision
        self.run_dir = Path(run_dir)
        layout = RunLayout(self.run_dir)
        self.checkpoints_dir, self.best_dir = layout.checkpoints, layout.best_model
        self.metric = objective.selection_metric
        self._setup_model()
        self._setup_data()
        self._setup_optimization()
        self.state = TrainingState()
        if resume_state is not None:
            self._load_state(resume_state)

    # -- setup ---------------------------------------------------------------------------
    def _setup_model(self) -> None:
        """The objective's model on its device, compiled and/or wrapped for data parallelism."""
        enable_tf32(self.training.tf32, self.world.device)
        self.model = self.objective.model
        set_attention(self.model, resolve_attention(self.config.model.attention,
                                                    self.world.device))
        self.trained = self.objective.trained.to(self.world.device)
        self.trained.train()
        self.forward_model = self._setup_forward_model()

    def _setup_data(self) -> None:
        """The length-grouped sampler over the objective's items and the DataLoader."""
        training, world, data = self.training, self.world, self.objective.train_data
        self.sampler = LengthGroupedBatchSampler(
            data.lengths, training.batch_size, self.config.seed,
            training.group_by_length, world.size, world.rank)
        self.loader = build_train_loader(data, self.sampler, self.objective.collate,
                                         training.num_workers,
                                         pin_memory=world.device.type == "cuda")
        self.steps_per_epoch = optimizer_steps_per_epoch(
            len(data), training.batch_size, world.size, training.gradient_accumulation_steps)
        self.total_steps = planned_steps(len(data), training, world.size)

    def _setup_optimization(self) -> None:
        """AdamW (with layer-wise rates when asked), the schedule and loss scaling."""
        training, device = self.training, self.world.device
        self.optimizer = build_optimizer(self.trained, training, device, self.objective.lr_scales)
        self.scheduler = build_scheduler(self.optimizer, training, self.total_steps)
        self.scaler = torch.amp.GradScaler(device.type,
                                           enabled=self.precision.needs_grad_scaler)
        self.averager = (WeightAverage(training.average_last_checkpoints)
                         if training.average_last_checkpoints else None)

    def _setup_forward_model(self) -> torch.nn.Module:
        """The module the training forward pass calls: compiled and/or DDP-wrapped."""
        forward_model = self.trained
        if self.training.compile:
            # dynamic=True: batch lengths vary with grouping, and one graph serves them all.
            # For a Module, torch.compile returns an OptimizedModule (a Module); its annotation
            # says only "a callable".
            forward_model = cast(torch.nn.Module, torch.compile(forward_model, dynamic=True))
        if self.world.is_distributed:
            device_ids = [self.world.device.index] if self.world.device.type == "cuda" else None
            forward_model = DistributedDataParallel(forward_model, device_ids=device_ids)
        return forward_model

    def _load_state(self, saved: dict) -> None:
        check_resume_world(saved, self.world, self.training.batch_size, self.run_dir)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.objective.load_extra_state(saved)
        self.state = TrainingState.restored(saved)
        per_rank = saved.get("rng_per_rank")
        restore_rng_state(per_rank[self.world.rank] if per_rank else saved["rng"])

    # -- the loop ------------------------------------------------------------------------
    def train(self, stop: StopRequests | None = None) -> TrainingOutcome:
        """Train until the planned steps are done or early stopping says stop.

        ``stop`` is the run session's signal handler (one is installed for the loop otherwise):
        the first SIGTERM, SIGINT or SIGHUP finishes the step, writes a checkpoint and raises
        ``TrainingInterrupted``.
        """
        state = self.state
        progress = tqdm(total=self.total_steps, initial=state.global_step, desc="training",
                        unit="step", dynamic_ncols=True, disable=not self.world.is_main)
        state.interval = LogInterval.start(self.world.device)
        state.last_checkpoint_time = time.monotonic()
        try:
            with contextlib.nullcontext(stop) if stop else StopRequests() as requests:
                while not self._finished():
                    self._train_epoch(progress, requests)
            last_evaluated = state.history[-1]["step"] if state.history else None
            if not state.stopped_early and last_evaluated != state.global_step:
                self._evaluate()  # max_steps can end mid-epoch: the final weights are evaluated too
            if self.averager and len(self.averager.snapshots) > 1:
                self._evaluate_weight_average(self.averager)
        finally:
            progress.close()
        if state.best_evaluation is None and self.best_dir.is_dir():
            # A resumed run whose best model predates the checkpoint re-evaluates it.
            state.best_evaluation = self.objective.evaluate_saved(self.best_dir, self.world)
        return TrainingOutcome(state.best_evaluation, state,
                               state.global_step / self.steps_per_epoch)

    def _finished(self) -> bool:
        return (self.state.stopped_early or self.state.global_step >= self.total_steps
                or self.state.epoch >= self.training.epochs)

    def _train_epoch(self, progress: tqdm, stop: StopRequests) -> None:
        state, accumulation = self.state, self.training.gradient_accumulation_steps
        self.sampler.set_epoch(state.epoch, start_batch=state.micro_batches_done)
        # Data drawn per epoch (pre-training's masks) follows the epoch as the sampler does.
        set_data_epoch = getattr(self.objective.train_data, "set_epoch", None)
        if set_data_epoch is not None:
            set_data_epoch(state.epoch)
        started = time.perf_counter()
        for batch in self.loader:
            state.micro_batches_done += 1
            end_of_epoch = state.micro_batches_done == self.sampler.batches_per_epoch
            step_ends = end_of_epoch or state.micro_batches_done % accumulation == 0
            self._train_micro_batch(batch, sync=step_ends)
            if not step_ends:
                continue
            self._optimizer_step()
            if end_of_epoch:
                state.epoch, state.micro_batches_done = state.epoch + 1, 0
            elapsed = time.perf_counter() - started
            state.train_seconds += elapsed
            self._interval.seconds += elapsed
            progress.update(1)
            self._after_step(end_of_epoch, progress, stop)
            started = time.perf_counter()  # evaluation and checkpoints are not training time
            if self._finished():
                return

    @property
    def _interval(self) -> LogInterval:
        if self.state.interval is None:
            self.state.interval = LogInterval.start(self.world.device)
        return self.state.interval

    def _train_micro_batch(self, batch: TrainingBatch, sync: bool) -> None:
        """Forward and backward on this process's share of one global batch."""
        share, inputs = batch.share, move_to(batch.inputs, self.world.device)
        if self.state.global_step == 0 and self.state.micro_batches_done == 1:
            self.trackers.log_model_graph(self.model, inputs)
        accumulation = self.training.gradient_accumulation_steps
        # The summed loss over the global batch's items, scaled so that DDP's mean over
        # processes gives the mean over the global batch: N processes compute what one would.
        scale = self.world.size / (share.global_size * accumulation)
        # The forward model is DDP-wrapped exactly when training is distributed.
        no_sync = (self.forward_model.no_sync()
                   if isinstance(self.forward_model, DistributedDataParallel) and not sync
                   else contextlib.nullcontext())
        interval, counts = self._interval, min(share.real_size, 1)
        with no_sync:
            losses, auxiliary = self.objective.losses(self.forward_model, inputs)
            losses = losses[:share.real_size]
            loss = losses.sum() * scale
            if auxiliary is not None:
                loss = loss + self.objective.auxiliary_weight * auxiliary * counts / accumulation
                interval.auxiliary_loss += auxiliary.detach() * counts
                interval.auxiliary_batches += counts
            self.scaler.scale(loss).backward()
        # The logged loss is this process's mean: a sample of the global one, at no extra sync.
        interval.loss += losses.detach().sum()
        interval.sentences += share.real_size
        interval.samples += share.global_size
        self.state.train_samples += share.global_size

    def _optimizer_step(self) -> None:
        """Clip, step, schedule; a non-finite gradient stops the run before it touches weights."""
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trained.parameters(),
                                                   self.training.max_grad_norm or float("inf"))
        self.state.grad_norm = float(grad_norm)  # the same on every process (all-reduced)
        if not math.isfinite(self.state.grad_norm) and not self.precision.needs_grad_scaler:
            raise NonFiniteLoss(
                f"the loss or its gradient became {self.state.grad_norm} at step "
                f"{self.state.global_step + 1} (epoch {self.state.epoch + 1}); the weights were "
                f"not updated. Try a lower training.learning_rate, a warm-up, or "
                f"training.mixed_precision: no")
        self.scaler.step(self.optimizer)  # with fp16 the scaler skips inf steps and backs off
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.global_step += 1

    def _after_step(self, end_of_epoch: bool, progress: tqdm, stop: StopRequests) -> None:
        """Log, evaluate, checkpoint and stop, as the step's position asks."""
        step, logging_config = self.state.global_step, self.config.logging
        if step % logging_config.log_steps == 0 or step == self.total_steps or end_of_epoch:
            self._log_training(progress)
        if end_of_epoch or (self.training.eval_steps and step % self.training.eval_steps == 0):
            self.state.stopped_early = self._evaluate()
        stop_signal, minutes_due = self._agree_on_signals(stop)
        if (end_of_epoch or stop_signal or minutes_due
                or (logging_config.save_steps and step % logging_config.save_steps == 0)):
            self._save_checkpoint()
        if stop_signal:
            raise TrainingInterrupted(stop_signal, step)
        if self.state.stopped_early and self.world.is_main:
            tqdm.write(f"Early stopping at step {step}: no {self.metric} improvement in "
                       f"{self.training.early_stopping_patience} evaluations.")

    def _agree_on_signals(self, stop: StopRequests) -> tuple[int, bool]:
        """(signal to stop on or 0, whether save_minutes have passed), the same on every process."""
        minutes = self.config.logging.save_minutes
        due = (bool(minutes)
               and time.monotonic() - self.state.last_checkpoint_time >= minutes * 60)
        flags = torch.tensor([stop.signal_number or 0, int(due)], dtype=torch.long)
        if self.world.is_distributed:
            flags = flags.to(self.world.device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        return int(flags[0]), bool(flags[1])

    def _log_training(self, progress: tqdm) -> None:
        interval = self._interval
        loss = float(interval.loss) / max(interval.sentences, 1)
        samples_per_second = interval.samples / max(interval.seconds, 1e-9)
        self.state.final_train_loss = loss
        progress.set_postfix(loss=f"{loss:.4f}", samples_per_s=f"{samples_per_second:.1f}")
        scalars = {
            "epoch": self.state.global_step / self.steps_per_epoch, "train/loss": loss,
            "train/learning_rate": self.scheduler.get_last_lr()[0],
            "train/grad_norm": self.state.grad_norm,
            "train/samples_per_second": samples_per_second,
        }
        if interval.auxiliary_batches and self.objective.auxiliary_name:
            scalars[self.objective.auxiliary_name] = (float(interval.auxiliary_loss)
                                                      / interval.auxiliary_batches)
        self.trackers.log_metrics(scalars, self.state.global_step)
        self.state.interval = LogInterval.start(self.world.device)

    # -- evaluation and checkpoints --------------------------------------------------------
    def _evaluate(self) -> bool:
        """Evaluate on validation, track, keep the best model; True when early stopping says so."""
        state, started = self.state, time.perf_counter()
        evaluation = self.objective.evaluate(self.world)
        epoch = state.global_step / self.steps_per_epoch
        scalars = {"epoch": epoch, **evaluation.prefixed_scalars()}
        self.trackers.log_metrics(scalars, state.global_step)
        if isinstance(evaluation, EvaluationResult):
            self.trackers.log_evaluation(evaluation, state.global_step)
        state.history.append({"step": state.global_step, **scalars})
        value = evaluation.metrics[self.metric]
        if is_improvement(value, state.best_value, self.metric):
            state.best_value, state.best_step, state.best_epoch = value, state.global_step, epoch
            state.evaluations_without_improvement = 0
            self._keep_best(evaluation)
        else:
            state.evaluations_without_improvement += 1
        if self.averager:
            self.averager.add(self.model, state.global_step)
        state.eval_seconds += time.perf_counter() - started
        if self.evaluation_hook is not None:  # may raise RunPruned
            self.evaluation_hook(state.global_step, evaluation.metrics)
        patience = self.training.early_stopping_patience
        return bool(patience) and state.evaluations_without_improvement >= patience

    def _keep_best(self, evaluation: Evaluation) -> None:
        if self.objective.keeps_best_model:
            self.state.best_evaluation = evaluation
            if self.world.is_main:
                self.objective.save_model(self.best_dir)

    def _save_checkpoint(self) -> None:
        """A resumable checkpoint: weights, optimiser, schedule, state and every process's RNG."""
        started = time.perf_counter()
        per_rank_rng = self.world.gather(rng_state())
        if self.world.is_main:
            write_checkpoint(self.checkpoints_dir, self.objective.save_model,
                             {**self.state.checkpointed(),
                              "optimizer": self.optimizer.state_dict(),
                              "scheduler": self.scheduler.state_dict(),
                              **self.objective.extra_state(),
                              "world_size": self.world.size, "rng_per_rank": per_rank_rng},
                             self.training.save_total_limit)
        self.state.last_checkpoint_time = time.monotonic()
        self.world.barrier()
        self.state.checkpoint_seconds += time.perf_counter() - started

    def _evaluate_weight_average(self, averager: WeightAverage) -> None:
        """Score the average of the last evaluated weights; it becomes the best model if better,
        and then the best step and epoch are those of the last weights averaged.

        The averaged weights are evaluated after the snapshots' own evaluations, so early
        stopping and the step checkpoints are unaffected either way.
        """
        state = self.state
        trained_weights = {name: value.detach().clone()
                           for name, value in self.model.state_dict().items()}
        self.model.load_state_dict(averager.average())
        evaluation = self.objective.evaluate(self.world)
        value = evaluation.metrics[self.metric]
        used = is_improvement(value, state.best_value, self.metric)
        state.weight_average = {"checkpoints": len(averager.snapshots),
                                "steps": list(averager.steps),
                                f"eval/{self.metric}": value, "used": used}
        if used:
            state.best_value, state.best_step = value, averager.steps[-1]
            state.best_epoch = averager.steps[-1] / self.steps_per_epoch
            self._keep_best(evaluation)
        self.model.load_state_dict(trained_weights)


class ClassifierTrainer(Trainer):
    """Fine-tunes a sequence classifier on ``splits.train``, selecting on ``splits.validation``.

    >>> trainer = ClassifierTrainer(model, tokenizer, splits, config, run_dir, trackers,
    ...                             world, precision)  # doctest: +SKIP
    >>> outcome = trainer.train()  # doctest: +SKIP
    """

    def __init__(self, model: torch.nn.Module, tokenizer, splits: DataSplits,
                 config: ExperimentConfig, run_dir: Path, trackers: TrackerSet, world: World,
                 precision: Precision, resume_state: dict | None = None,
                 evaluation_hook: EvaluationHook | None = None,
                 teacher_targets: dict[str, np.ndarray] | None = None):
        objective = ClassificationObjective(model, tokenizer, splits, config, precision,
                                            teacher_targets)
        super().__init__(objective, config, run_dir, trackers, world, precision, resume_state,
                         evaluation_hook)


def check_resume_world(saved: dict, world: World, batch_size: int, run_dir: Path) -> None:
    """A checkpoint of ``run_dir`` resumes only with the world size that wrote it: with another,
    the global batch, the data order and so the result would change."""
    saved_world = saved.get("world_size", 1)
    if saved_world == world.size:
        return
    launcher = (LAUNCHER if saved_world == 1 else
                f"torchrun --nproc_per_node {saved_world} run_experiment.py")
    raise ResumableError(f"this run was trained by {saved_world} process(es) (global batch "
                         f"{saved_world * batch_size}); resuming it with {world.size} would "
                         f"change the global batch and the data order. Resume it with:",
                         run_dir, launcher)
