"""The training loop: AdamW, linear warm-up and decay, clipping, accumulation, evaluation,
early stopping, best-checkpoint keeping and resumable step checkpoints."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..config import ExperimentConfig
from ..data import DataSplits, TokenizedDataset, make_collator
from ..metrics import EvaluationResult
from ..models import save_model
from ..tracking import TrackerSet
from .checkpoints import restore_rng_state, save_checkpoint
from .evaluation import evaluate, forward_logits, move_to

LOWER_IS_BETTER = {"loss"}


@dataclass
class TrainingOutcome:
    """What the loop hands back: the best validation result and how training went."""

    best_evaluation: EvaluationResult | None
    best_step: int
    best_epoch: float
    global_step: int
    epochs_completed: float
    stopped_early: bool
    train_seconds: float
    train_samples: int
    final_train_loss: float | None
    history: list[dict] = field(default_factory=list)

    @property
    def train_samples_per_second(self) -> float:
        return self.train_samples / self.train_seconds if self.train_seconds else 0.0


def pick_device(requested: str) -> torch.device:
    """auto → cuda, then mps, then cpu; an explicit choice is honoured."""
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def build_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float
                    ) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and normalisation weights."""
    decayed, undecayed = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_norm_or_bias = parameter.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")
        (undecayed if is_norm_or_bias else decayed).append(parameter)
    return torch.optim.AdamW([{"params": decayed, "weight_decay": weight_decay},
                              {"params": undecayed, "weight_decay": 0.0}], lr=learning_rate)


def class_weights(labels: list[int], num_labels: int) -> torch.Tensor:
    """Inverse-frequency weights (sklearn's 'balanced'), 1.0 for an absent class."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=num_labels).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_labels * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


def is_improvement(value: float, best: float | None, metric: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if metric in LOWER_IS_BETTER else value > best


def _epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    # Seeded per epoch, so a resumed run sees exactly the order the interrupted one would have.
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    return torch.randperm(size, generator=generator).tolist()


def _autocast(device: torch.device, mixed_precision: str):
    if device.type != "cuda" or mixed_precision == "no":
        return contextlib.nullcontext()
    dtype = torch.float16 if mixed_precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type="cuda", dtype=dtype)


def train(model: torch.nn.Module, tokenizer, splits: DataSplits, config: ExperimentConfig,
          run_dir: Path, trackers: TrackerSet, device: torch.device,
          resume_state: dict | None = None) -> TrainingOutcome:
    """Train ``model`` on ``splits.train``, evaluating on ``splits.validation``.

    The best model (by ``training.early_stopping_metric``) is kept in ``checkpoints/best``;
    resumable checkpoints go to ``checkpoints/step-NNNNNN`` every ``logging.save_steps``.
    ``resume_state`` (from a step checkpoint) continues an interrupted run exactly.
    """
    training, logging_config = config.training, config.logging
    label_names = splits.label_names
    run_dir = Path(run_dir)
    checkpoints_dir = run_dir / "checkpoints"
    best_dir = checkpoints_dir / "best"
    metric = training.early_stopping_metric
    model.to(device)
    model.train()

    dataset = TokenizedDataset(splits.train, tokenizer, config.data.max_length)
    collate = make_collator(tokenizer)
    micro_batches_per_epoch = math.ceil(len(dataset) / training.batch_size)
    steps_per_epoch = math.ceil(micro_batches_per_epoch / training.gradient_accumulation_steps)
    total_steps = steps_per_epoch * training.epochs
    if training.max_steps:
        total_steps = min(total_steps, training.max_steps)
    optimizer = build_optimizer(model, training.learning_rate, training.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, min(training.warmup_steps, total_steps),
                                                total_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda"
                                  and training.mixed_precision == "fp16")
    weights = (class_weights(splits.train.labels, len(label_names)).to(device)
               if training.class_weighting == "balanced" else None)
    loss_function = torch.nn.CrossEntropyLoss(weight=weights)

    state = {"global_step": 0, "epoch": 0, "micro_batches_done": 0, "best_value": None,
             "best_step": 0, "best_epoch": 0.0, "evaluations_without_improvement": 0,
             "train_samples": 0, "train_seconds": 0.0, "history": []}
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        state.update({key: resume_state[key] for key in state})
        restore_rng_state(resume_state["rng"])

    best_evaluation: EvaluationResult | None = None
    stopped_early = False
    final_train_loss = None
    # Since the last log point; seconds count forward/backward/optimiser work only, so
    # samples/s is not diluted by evaluations and checkpoints.
    running_loss, running_count, interval_samples, interval_seconds = 0.0, 0, 0, 0.0
    graph_logged = resume_state is not None

    def current_epoch() -> float:
        return state["global_step"] / steps_per_epoch

    def run_evaluation() -> bool:
        """Evaluate, track, keep the best; True when early stopping says stop."""
        nonlocal best_evaluation
        evaluation = evaluate(model, tokenizer, splits.validation, "eval", label_names,
                              config.data.max_length, training.eval_batch_size, device)
        step = state["global_step"]
        scalars = {"epoch": current_epoch(), **evaluation.prefixed_scalars()}
        trackers.log_metrics(scalars, step)
        trackers.log_evaluation(evaluation, step)
        state["history"].append({"step": step, **scalars})
        value = evaluation.metrics[metric]
        if is_improvement(value, state["best_value"], metric):
            state.update(best_value=value, best_step=step, best_epoch=current_epoch(),
                         evaluations_without_improvement=0)
            best_evaluation = evaluation
            save_model(model, tokenizer, best_dir, label_names)
        else:
            state["evaluations_without_improvement"] += 1
        patience = training.early_stopping_patience
        return bool(patience) and state["evaluations_without_improvement"] >= patience

    def checkpoint() -> None:
        save_checkpoint(checkpoints_dir, model, tokenizer, label_names,
                        {**state, "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict()}, training.save_total_limit)

    progress = tqdm(total=total_steps, initial=state["global_step"], desc="training",
                    unit="step", dynamic_ncols=True)
    try:
        while state["global_step"] < total_steps and state["epoch"] < training.epochs:
            order = _epoch_order(len(dataset), config.seed, state["epoch"])
            batches = [order[start:start + training.batch_size]
                       for start in range(0, len(order), training.batch_size)]
            for batch_number in range(state["micro_batches_done"], len(batches)):
                started = time.perf_counter()
                batch = move_to(collate([dataset[index] for index in batches[batch_number]]),
                                device)
                if not graph_logged:
                    trackers.log_model_graph(model, batch)
                    graph_logged = True
                with _autocast(device, training.mixed_precision):
                    logits = forward_logits(model, batch)
                loss = loss_function(logits.float(), batch["labels"])
                scaler.scale(loss / training.gradient_accumulation_steps).backward()
                batch_size = len(batches[batch_number])
                running_loss += loss.item() * batch_size
                running_count += batch_size
                interval_samples += batch_size
                state["train_samples"] += batch_size
                state["micro_batches_done"] = batch_number + 1
                batch_seconds = time.perf_counter() - started
                state["train_seconds"] += batch_seconds
                interval_seconds += batch_seconds
                is_last_of_epoch = batch_number + 1 == len(batches)
                if (batch_number + 1) % training.gradient_accumulation_steps and not is_last_of_epoch:
                    continue

                step_started = time.perf_counter()
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), training.max_grad_norm or float("inf"))
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state["global_step"] += 1
                step_seconds = time.perf_counter() - step_started
                state["train_seconds"] += step_seconds
                interval_seconds += step_seconds
                step = state["global_step"]
                progress.update(1)
                samples_per_second = interval_samples / max(interval_seconds, 1e-9)
                progress.set_postfix(loss=f"{running_loss / max(running_count, 1):.4f}",
                                     samples_per_s=f"{samples_per_second:.1f}")

                if step % logging_config.log_steps == 0 or step == total_steps or is_last_of_epoch:
                    final_train_loss = running_loss / max(running_count, 1)
                    trackers.log_metrics({
                        "epoch": current_epoch(), "train/loss": final_train_loss,
                        "train/learning_rate": scheduler.get_last_lr()[0],
                        "train/grad_norm": float(grad_norm),
                        "train/samples_per_second": samples_per_second,
                    }, step)
                    running_loss, running_count, interval_samples, interval_seconds = 0.0, 0, 0, 0.0

                if is_last_of_epoch:
                    state["epoch"] += 1
                    state["micro_batches_done"] = 0
                stop = False
                if is_last_of_epoch or (training.eval_steps and step % training.eval_steps == 0):
                    stop = run_evaluation()
                if logging_config.save_steps and step % logging_config.save_steps == 0:
                    checkpoint()
                if stop:
                    stopped_early = True
                    tqdm.write(f"Early stopping at step {step}: no {metric} improvement in "
                               f"{training.early_stopping_patience} evaluations.")
                    break
                if step >= total_steps:
                    break
            if stopped_early or state["global_step"] >= total_steps:
                break
        last_evaluated = state["history"][-1]["step"] if state["history"] else None
        if not stopped_early and last_evaluated != state["global_step"]:
            run_evaluation()  # max_steps can end mid-epoch: the final weights are evaluated too
    finally:
        progress.close()

    if best_evaluation is None and best_dir.is_dir():
        # Resumed after the best checkpoint was written: re-evaluate it for the record.
        from ..models import load_saved_model
        best_model, _ = load_saved_model(best_dir)
        best_evaluation = evaluate(best_model.to(device), tokenizer, splits.validation, "eval",
                                   label_names, config.data.max_length,
                                   training.eval_batch_size, device)
    return TrainingOutcome(
        best_evaluation=best_evaluation, best_step=state["best_step"],
        best_epoch=state["best_epoch"], global_step=state["global_step"],
        epochs_completed=current_epoch(), stopped_early=stopped_early,
        train_seconds=state["train_seconds"], train_samples=state["train_samples"],
        final_train_loss=final_train_loss, history=state["history"])

