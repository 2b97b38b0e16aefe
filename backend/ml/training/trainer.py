"""The trainer: a small object with a typed state and one named method per step.

Read ``train`` first: it is the whole loop. Around it, ``_train_micro_batch`` (forward and
backward on one batch), ``_optimizer_step`` (clip, step, schedule), ``_evaluate`` (validation,
best model, early stopping) and ``_save_checkpoint``. Distributed data parallel changes only three
things, all visible here: the model is wrapped in DDP, the sampler hands each process its share of
every global batch, and only the main process writes files.
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
from typing import cast

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..config import ExperimentConfig
from ..data import DataSplits, TokenizedDataset, make_collator
from ..errors import UserError
from ..metrics import EvaluationResult
from ..models import load_saved_model, save_model, set_attention
from ..run_directory import RunLayout
from ..tracking import TrackerSet
from .batching import LengthGroupedBatchSampler, build_train_loader
from .checkpoints import restore_rng_state, rng_state, save_checkpoint
from .distributed import World
from .evaluation import evaluate, forward_logits, move_to
from .interruption import StopRequests, TrainingInterrupted
from .optimization import build_optimizer, build_scheduler, class_weights
from .precision import Precision, enable_tf32, resolve_attention
from .recipes import (
    SentenceAndTokenModel,
    WeightAverage,
    distillation_losses,
    layerwise_lr_scales,
)
from .steps import optimizer_steps_per_epoch, planned_steps

logger = logging.getLogger(__name__)

LOWER_IS_BETTER = {"loss"}


@dataclass
class TrainingState:
    """Where training stands; saved in every checkpoint, so a resumed run continues exactly."""

    global_step: int = 0
    epoch: int = 0
    micro_batches_done: int = 0
    """Micro-batches of the current epoch already trained."""
    best_value: float | None = None
    best_step: int = 0
    best_epoch: float = 0.0
    evaluations_without_improvement: int = 0
    train_samples: int = 0
    train_seconds: float = 0.0
    """Forward, backward and optimiser work only; evaluations and checkpoints count apart."""
    eval_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


@dataclass
class TrainingOutcome:
    """What training hands back: the best validation result and how training went."""

    best_evaluation: EvaluationResult | None
    state: TrainingState
    epochs_completed: float
    stopped_early: bool
    final_train_loss: float | None
    weight_average: dict | None = None
    """With training.average_last_checkpoints: how many, their validation score, whether used."""

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


class ClassifierTrainer:
    """Fine-tunes a sequence classifier on ``splits.train``, selecting on ``splits.validation``.

    >>> trainer = ClassifierTrainer(model, tokenizer, splits, config, run_dir, trackers,
    ...                             world, precision)  # doctest: +SKIP
    >>> outcome = trainer.train()  # doctest: +SKIP
    """

    def __init__(self, model: torch.nn.Module, tokenizer, splits: DataSplits,
                 config: ExperimentConfig, run_dir: Path, trackers: TrackerSet, world: World,
                 precision: Precision, resume_state: dict | None = None,
                 evaluation_hook: EvaluationHook | None = None,
                 soft_targets: list[list[float]] | None = None):
        self.config, self.training = config, config.training
        self.evaluation_hook = evaluation_hook
        self.soft_targets = soft_targets  # a teacher's probabilities per training sentence
        self.tokenizer, self.splits, self.trackers = tokenizer, splits, trackers
        self.world, self.precision = world, precision
        layout = RunLayout(Path(run_dir))
        self.checkpoints_dir, self.best_dir = layout.checkpoints, layout.best_model
        self.metric = self.training.early_stopping_metric
        self._setup_model(model)
        self._setup_data()
        self._setup_optimization()
        self.state = TrainingState()
        self.best_evaluation: EvaluationResult | None = None
        self.weight_average: dict | None = None
        if resume_state is not None:
            self._load_state(resume_state)

    # -- setup ---------------------------------------------------------------------------
    def _setup_model(self, model: torch.nn.Module) -> None:
        """The classifier on its device, and what trains: the classifier, or the classifier and
        its biased-word tagging head, compiled and/or wrapped for data parallelism."""
        enable_tf32(self.training.tf32, self.world.device)
        set_attention(model, resolve_attention(self.config.model.attention, self.world.device))
        self.model = model.to(self.world.device)
        self.tags_biased_words = self.training.biased_words_loss_weight > 0
        self.trained = (SentenceAndTokenModel(self.model).to(self.world.device)
                        if self.tags_biased_words else self.model)
        self.trained.train()
        self.forward_model = self._setup_forward_model()

    def _setup_data(self) -> None:
        """Tokenised training sentences, the length-grouped sampler and the DataLoader."""
        training, world = self.training, self.world
        self.train_data = TokenizedDataset(self.splits.train, self.tokenizer,
                                           self.config.data.max_length,
                                           tag_biased_words=self.tags_biased_words,
                                           soft_targets=self.soft_targets)
        self.sampler = LengthGroupedBatchSampler(
            self.train_data.lengths, training.batch_size, self.config.seed,
            training.group_by_length, world.size, world.rank)
        self.loader = build_train_loader(self.train_data, self.sampler,
                                         make_collator(self.tokenizer), training.num_workers,
                                         pin_memory=world.device.type == "cuda")
        self.steps_per_epoch = optimizer_steps_per_epoch(
            len(self.train_data), training.batch_size, world.size,
            training.gradient_accumulation_steps)
        self.total_steps = planned_steps(len(self.train_data), training, world.size)

    def _setup_optimization(self) -> None:
        """AdamW (with layer-wise rates when asked), the schedule, loss scaling and the loss."""
        training, device = self.training, self.world.device
        self.optimizer = build_optimizer(self.trained, training, device,
                                         layerwise_lr_scales(self.model,
                                                             training.layerwise_lr_decay))
        self.scheduler = build_scheduler(self.optimizer, training, self.total_steps)
        self.scaler = torch.amp.GradScaler(device.type,
                                           enabled=self.precision.needs_grad_scaler)
        weights = (class_weights(self.splits.train.labels, len(self.splits.label_names))
                   if training.class_weighting == "balanced" else None)
        self.loss_function = torch.nn.CrossEntropyLoss(
            weight=weights, reduction="none", label_smoothing=training.label_smoothing)
        self.loss_function.to(device)
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
        check_resume_world(saved, self.world, self.training.batch_size)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if isinstance(self.trained, SentenceAndTokenModel):  # tags biased words
            self.trained.token_head.load_state_dict(saved["token_head"])
        names = {item.name for item in dataclasses.fields(TrainingState)}
        self.state = TrainingState(**{key: value for key, value in saved.items() if key in names})
        per_rank = saved.get("rng_per_rank")
        restore_rng_state(per_rank[self.world.rank] if per_rank else saved["rng"])

    # -- the loop ------------------------------------------------------------------------
    def train(self) -> TrainingOutcome:
        """Train until the planned steps are done or early stopping says stop."""
        state = self.state
        progress = tqdm(total=self.total_steps, initial=state.global_step, desc="training",
                        unit="step", dynamic_ncols=True, disable=not self.world.is_main)
        self._stopped_early = False
        self._interval = self._new_interval()
        self._last_checkpoint_time = time.monotonic()
        self._final_train_loss: float | None = None
        try:
            with StopRequests() as stop:
                while not self._finished():
                    self._train_epoch(progress, stop)
            last_evaluated = state.history[-1]["step"] if state.history else None
            if not self._stopped_early and last_evaluated != state.global_step:
                self._evaluate()  # max_steps can end mid-epoch: the final weights are evaluated too
            if self.averager and len(self.averager.snapshots) > 1:
                self._evaluate_weight_average(self.averager)
        finally:
            progress.close()
        if self.best_evaluation is None and self.best_dir.is_dir():
            self.best_evaluation = self._evaluate_saved_best()
        return TrainingOutcome(self.best_evaluation, state,
                               state.global_step / self.steps_per_epoch, self._stopped_early,
                               self._final_train_loss, self.weight_average)

    def _finished(self) -> bool:
        return (self._stopped_early or self.state.global_step >= self.total_steps
                or self.state.epoch >= self.training.epochs)

    def _train_epoch(self, progress: tqdm, stop: StopRequests) -> None:
        state, accumulation = self.state, self.training.gradient_accumulation_steps
        self.sampler.set_epoch(state.epoch, start_batch=state.micro_batches_done)
        plan = self.sampler.local_batches()
        started = time.perf_counter()
        for local, batch in zip(plan, self.loader):
            state.micro_batches_done += 1
            end_of_epoch = state.micro_batches_done == self.sampler.batches_per_epoch
            step_ends = end_of_epoch or state.micro_batches_done % accumulation == 0
            self._train_micro_batch(batch, local.real_size, local.global_size, sync=step_ends)
            state.train_samples += local.global_size
            self._interval["samples"] += local.global_size
            if not step_ends:
                continue
            self._optimizer_step()
            if end_of_epoch:
                state.epoch, state.micro_batches_done = state.epoch + 1, 0
            elapsed = time.perf_counter() - started
            state.train_seconds += elapsed
            self._interval["seconds"] += elapsed
            progress.update(1)
            self._after_step(end_of_epoch, progress, stop)
            started = time.perf_counter()  # evaluation and checkpoints are not training time
            if self._finished():
                return

    def _train_micro_batch(self, batch: dict, real_size: int, global_size: int,
                           sync: bool) -> None:
        """Forward and backward on this process's share of one global batch."""
        batch = move_to(batch, self.world.device)
        if self.state.global_step == 0 and self.state.micro_batches_done == 1:
            self.trackers.log_model_graph(self.model, batch)
        # The summed loss over the global batch's sentences, scaled so that DDP's mean over
        # processes gives the mean over the global batch: N processes compute what one would.
        scale = self.world.size / (global_size * self.training.gradient_accumulation_steps)
        # The forward model is DDP-wrapped exactly when training is distributed.
        no_sync = (self.forward_model.no_sync()
                   if isinstance(self.forward_model, DistributedDataParallel) and not sync
                   else contextlib.nullcontext())
        with no_sync:
            with self.precision.autocast():
                if self.tags_biased_words:
                    logits, token_logits = self.forward_model(batch["input_ids"],
                                                              batch["attention_mask"])
                else:
                    logits = forward_logits(self.forward_model, batch)
            losses = self.loss_function(logits.float(), batch["labels"])
            if "soft_targets" in batch:
                distillation = self.training.distillation
                losses = distillation_losses(losses, logits.float(), batch["soft_targets"],
                                             distillation.temperature, distillation.soft_weight)
            losses = losses[:real_size]
            loss = losses.sum() * scale
            if self.tags_biased_words:
                tagging_loss = torch.nn.functional.cross_entropy(
                    token_logits.float().flatten(0, 1), batch["token_labels"].flatten(),
                    ignore_index=-100)
                loss = loss + (self.training.biased_words_loss_weight * tagging_loss
                               * min(real_size, 1) / self.training.gradient_accumulation_steps)
                self._interval["tagging_loss"] += tagging_loss.detach() * min(real_size, 1)
                self._interval["tagged_batches"] += min(real_size, 1)
            self.scaler.scale(loss).backward()
        # The logged loss is this process's mean: a sample of the global one, at no extra sync.
        self._interval["loss"] += losses.detach().sum()
        self._interval["sentences"] += real_size

    def _optimizer_step(self) -> None:
        """Clip, step, schedule; a non-finite gradient stops the run before it touches weights."""
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trained.parameters(),
                                                   self.training.max_grad_norm or float("inf"))
        self._grad_norm = float(grad_norm)  # identical on every process (all-reduced gradients)
        if not math.isfinite(self._grad_norm) and not self.precision.needs_grad_scaler:
            raise NonFiniteLoss(
                f"the loss or its gradient became {self._grad_norm} at step "
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
            self._stopped_early = self._evaluate()
        stop_signal, minutes_due = self._agree_on_signals(stop)
        if (end_of_epoch or stop_signal or minutes_due
                or (logging_config.save_steps and step % logging_config.save_steps == 0)):
            self._save_checkpoint()
        if stop_signal:
            raise TrainingInterrupted(stop_signal, step)
        if self._stopped_early and self.world.is_main:
            tqdm.write(f"Early stopping at step {step}: no {self.metric} improvement in "
                       f"{self.training.early_stopping_patience} evaluations.")

    def _agree_on_signals(self, stop: StopRequests) -> tuple[int, bool]:
        """(signal to stop on or 0, whether save_minutes have passed), the same on every process."""
        minutes = self.config.logging.save_minutes
        due = bool(minutes) and time.monotonic() - self._last_checkpoint_time >= minutes * 60
        flags = torch.tensor([stop.signal_number or 0, int(due)], dtype=torch.long)
        if self.world.is_distributed:
            flags = flags.to(self.world.device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        return int(flags[0]), bool(flags[1])

    def _log_training(self, progress: tqdm) -> None:
        interval = self._interval
        loss = float(interval["loss"]) / max(interval["sentences"], 1)
        samples_per_second = interval["samples"] / max(interval["seconds"], 1e-9)
        self._final_train_loss = loss
        progress.set_postfix(loss=f"{loss:.4f}", samples_per_s=f"{samples_per_second:.1f}")
        scalars = {
            "epoch": self.state.global_step / self.steps_per_epoch, "train/loss": loss,
            "train/learning_rate": self.scheduler.get_last_lr()[0],
            "train/grad_norm": self._grad_norm,
            "train/samples_per_second": samples_per_second,
        }
        if interval["tagged_batches"]:
            scalars["train/biased_words_loss"] = (float(interval["tagging_loss"])
                                                  / interval["tagged_batches"])
        self.trackers.log_metrics(scalars, self.state.global_step)
        self._interval = self._new_interval()

    def _new_interval(self) -> dict:
        """Since the last log point: this process's loss sum and sentences, the global batch's
        samples and the seconds of training work (evaluations and checkpoints excluded)."""
        return {"loss": torch.zeros((), device=self.world.device), "sentences": 0, "samples": 0,
                "seconds": 0.0, "tagging_loss": torch.zeros((), device=self.world.device),
                "tagged_batches": 0}

    # -- evaluation and checkpoints --------------------------------------------------------
    def _evaluate(self) -> bool:
        """Evaluate on validation, track, keep the best model; True when early stopping says so."""
        state, started = self.state, time.perf_counter()
        evaluation = evaluate(self.model, self.tokenizer, self.splits.validation, "eval",
                              self.splits.label_names, self.config.data.max_length,
                              self.training.eval_batch_size, self.world.device,
                              precision=self.precision, world=self.world)
        epoch = state.global_step / self.steps_per_epoch
        scalars = {"epoch": epoch, **evaluation.prefixed_scalars()}
        self.trackers.log_metrics(scalars, state.global_step)
        self.trackers.log_evaluation(evaluation, state.global_step)
        state.history.append({"step": state.global_step, **scalars})
        value = evaluation.metrics[self.metric]
        if is_improvement(value, state.best_value, self.metric):
            state.best_value, state.best_step, state.best_epoch = value, state.global_step, epoch
            state.evaluations_without_improvement = 0
            self.best_evaluation = evaluation
            if self.world.is_main:
                save_model(self.model, self.tokenizer, self.best_dir, self.splits.label_names)
        else:
            state.evaluations_without_improvement += 1
        if self.averager:
            self.averager.add(self.model)
        state.eval_seconds += time.perf_counter() - started
        if self.evaluation_hook is not None:  # may raise RunPruned
            self.evaluation_hook(state.global_step, evaluation.metrics)
        patience = self.training.early_stopping_patience
        return bool(patience) and state.evaluations_without_improvement >= patience

    def _save_checkpoint(self) -> None:
        """A resumable checkpoint: weights, optimiser, schedule, state and every process's RNG."""
        started = time.perf_counter()
        per_rank_rng = self.world.gather(rng_state())
        if self.world.is_main:
            save_checkpoint(self.checkpoints_dir, self.model, self.tokenizer,
                            self.splits.label_names,
                            {**dataclasses.asdict(self.state),
                             "optimizer": self.optimizer.state_dict(),
                             "scheduler": self.scheduler.state_dict(),
                             **({"token_head": self.trained.token_head.state_dict()}
                                if isinstance(self.trained, SentenceAndTokenModel) else {}),
                             "world_size": self.world.size, "rng_per_rank": per_rank_rng},
                            self.training.save_total_limit)
        self._last_checkpoint_time = time.monotonic()
        self.world.barrier()
        self.state.checkpoint_seconds += time.perf_counter() - started

    def _evaluate_weight_average(self, averager: WeightAverage) -> None:
        """Score the average of the last evaluated weights; it becomes the best model if better.

        The averaged weights are evaluated after the snapshots' own evaluations, so early
        stopping and the step checkpoints are unaffected either way.
        """
        trained_weights = {name: value.detach().clone()
                           for name, value in self.model.state_dict().items()}
        self.model.load_state_dict(averager.average())
        evaluation = evaluate(self.model, self.tokenizer, self.splits.validation, "eval",
                              self.splits.label_names, self.config.data.max_length,
                              self.training.eval_batch_size, self.world.device,
                              precision=self.precision, world=self.world)
        value = evaluation.metrics[self.metric]
        used = is_improvement(value, self.state.best_value, self.metric)
        self.weight_average = {"checkpoints": len(averager.snapshots),
                               f"eval/{self.metric}": value, "used": used}
        if used:
            self.state.best_value, self.best_evaluation = value, evaluation
            if self.world.is_main:
                save_model(self.model, self.tokenizer, self.best_dir, self.splits.label_names)
        self.model.load_state_dict(trained_weights)

    def _evaluate_saved_best(self) -> EvaluationResult:
        """A resumed run whose best model predates the checkpoint re-evaluates it for the record."""
        best_model, _ = load_saved_model(self.best_dir)
        return evaluate(best_model.to(self.world.device), self.tokenizer,
                        self.splits.validation, "eval", self.splits.label_names,
                        self.config.data.max_length, self.training.eval_batch_size,
                        self.world.device, precision=self.precision, world=self.world)


def check_resume_world(saved: dict, world: World, batch_size: int) -> None:
    """A checkpoint resumes only with the world size that wrote it: with another, the global
    batch, the data order and so the result would change."""
    saved_world = saved.get("world_size", 1)
    if saved_world == world.size:
        return
    launcher = ("python run_experiment.py" if saved_world == 1 else
                f"torchrun --nproc_per_node {saved_world} run_experiment.py")
    raise UserError(f"this run was trained by {saved_world} process(es) (global batch "
                    f"{saved_world * batch_size}); resuming it with {world.size} would change the "
                    f"global batch and the data order. Resume it with: {launcher} resume RUN_DIR")
