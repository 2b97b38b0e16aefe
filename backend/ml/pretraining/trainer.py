"""The masked-language-model training loop: one process, the fine-tuning loop's building blocks.

Batches are length-grouped (``LengthGroupedBatchSampler``), tokens are masked on the fly by
transformers' ``DataCollatorForLanguageModeling`` (80% ``[MASK]``, 10% random, 10% kept), the
optimiser and schedule are the fine-tuning ones (``build_optimizer``, ``build_scheduler``), and
the forward pass runs under the resolved mixed precision.

The held-out sentences are masked once, with a fixed seed, so the loss before and after training
(and at every evaluation) is measured on exactly the same masked tokens.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import cast

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import DataCollatorForLanguageModeling

from ..training.batching import LengthGroupedBatchSampler
from ..training.interruption import StopRequests, TrainingInterrupted
from ..training.optimization import build_optimizer, build_scheduler
from ..training.precision import Precision
from ..training.steps import planned_steps

IGNORED = -100  # label of the tokens the loss does not score (unmasked ones)


def tokenize_sentences(tokenizer, texts: list[str], max_length: int) -> list[dict]:
    """One unpadded item per sentence, with the mask of special tokens that are never masked."""
    encoded = tokenizer(texts, truncation=True, max_length=max_length, padding=False,
                        return_special_tokens_mask=True, return_token_type_ids=False)
    return [{"input_ids": encoded["input_ids"][row],
             "attention_mask": encoded["attention_mask"][row],
             "special_tokens_mask": encoded["special_tokens_mask"][row]}
            for row in range(len(texts))]


@dataclass
class PretrainingState:
    """Where the loop is: steps taken, time spent, the latest losses."""

    global_step: int = 0
    epoch: float = 0.0
    sentences_seen: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    last_train_loss: float | None = None


class MaskedLanguageModelTrainer:
    """Trains ``model`` on ``train_texts``; ``evaluate()`` scores the fixed held-out batches.

    >>> trainer = MaskedLanguageModelTrainer(built.model, built.tokenizer, corpus, config,
    ...                                      trackers, device, precision)  # doctest: +SKIP
    >>> before = trainer.evaluate(); trainer.train(); after = trainer.evaluate()  # doctest: +SKIP
    """

    def __init__(self, model, tokenizer, train_texts: list[str], holdout_texts: list[str],
                 config, trackers, device: torch.device, precision: Precision):
        self.model = model.to(device)
        self.config = config
        self.trackers = trackers
        self.device = device
        self.precision = precision
        training, max_length = config.training, config.data.max_length
        self.train_items = tokenize_sentences(tokenizer, train_texts, max_length)
        probability = config.pretraining.mlm_probability
        self.collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability,
                                                        seed=config.seed)
        self.sampler = LengthGroupedBatchSampler(
            [len(item["input_ids"]) for item in self.train_items], training.batch_size,
            config.seed, group_by_length=training.group_by_length)
        self.holdout_batches = self._fixed_batches(tokenizer, holdout_texts, probability)
        self.total_steps = planned_steps(len(self.train_items), training)
        self.optimizer = build_optimizer(self.model, training, device)
        self.scheduler = build_scheduler(self.optimizer, training, self.total_steps)
        self.scaler = torch.amp.GradScaler("cuda") if precision.needs_grad_scaler else None
        self.state = PretrainingState()

    def _fixed_batches(self, tokenizer, texts: list[str], probability: float) -> list[dict]:
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability,
                                                   seed=self.config.seed + 1)
        items = tokenize_sentences(tokenizer, texts, self.config.data.max_length)
        size = self.config.training.eval_batch_size
        return [collator(items[start:start + size]) for start in range(0, len(items), size)]

    def _to_device(self, batch) -> dict[str, torch.Tensor]:
        return {name: batch[name].to(self.device) for name in ("input_ids", "attention_mask",
                                                               "labels")}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Masked-language-model loss per masked token of the held-out sentences, and its
        perplexity (exp of the loss)."""
        self.model.eval()
        total_loss, masked_tokens = 0.0, 0
        for batch in self.holdout_batches:
            batch = self._to_device(batch)
            labels = batch.pop("labels")
            with self.precision.autocast():
                logits = self.model(**batch).logits
            scored = labels != IGNORED
            total_loss += torch.nn.functional.cross_entropy(
                logits[scored].float(), labels[scored], reduction="sum").item()
            masked_tokens += int(scored.sum())
        self.model.train()
        loss = total_loss / max(masked_tokens, 1)
        return {"mlm_loss": loss, "perplexity": math.exp(min(loss, 50.0)),
                "masked_tokens": masked_tokens}

    def _optimizer_step(self) -> None:
        max_grad_norm = self.config.training.max_grad_norm
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.global_step += 1

    def _log(self, losses: list[float]) -> None:
        self.state.last_train_loss = sum(losses) / len(losses)
        self.trackers.log_metrics({"train/loss": self.state.last_train_loss,
                                   "train/learning_rate": self.scheduler.get_last_lr()[0],
                                   "train/epoch": self.state.epoch}, self.state.global_step)

    def _log_evaluation(self) -> None:
        started = time.perf_counter()
        scores = self.evaluate()
        self.state.eval_seconds += time.perf_counter() - started
        self.trackers.log_metrics({"eval/loss": scores["mlm_loss"],
                                   "eval/perplexity": scores["perplexity"],
                                   "epoch": self.state.epoch}, self.state.global_step)

    def train(self) -> PretrainingState:
        """Run ``training.epochs`` epochs (or ``training.max_steps`` steps).

        SIGTERM, SIGINT or SIGHUP finish the optimiser step in progress and raise
        ``TrainingInterrupted``, as in fine-tuning; handlers are installed explicitly, so a run
        started with SIGINT ignored (a background job) still stops on Ctrl-C's signal.
        """
        # A list is a map-style dataset (__getitem__ and __len__), which DataLoader takes;
        # its annotation names only the Dataset class.
        loader: DataLoader[dict] = DataLoader(cast(Dataset[dict], self.train_items),
                                              batch_sampler=self.sampler, collate_fn=self.collator)
        self.model.train()
        progress = tqdm(total=self.total_steps, desc="Pre-training", unit="step")
        started = time.perf_counter()
        try:
            with StopRequests() as stop:
                for epoch in range(self.config.training.epochs):
                    self._train_epoch(loader, epoch, progress, stop)
                    if self.state.global_step >= self.total_steps:
                        break
        finally:
            progress.close()
            # Evaluations during the loop are not training time.
            self.state.train_seconds = time.perf_counter() - started - self.state.eval_seconds
        return self.state

    def _train_epoch(self, loader: DataLoader, epoch: int, progress: tqdm,
                     stop: StopRequests) -> None:
        training = self.config.training
        accumulation = training.gradient_accumulation_steps
        batches_per_epoch = len(self.sampler)
        losses: list[float] = []
        self.sampler.set_epoch(epoch)
        for index, batch in enumerate(loader):
            batch = self._to_device(batch)
            with self.precision.autocast():
                loss = self.model(**batch).loss
            (self.scaler.scale(loss / accumulation) if self.scaler else
             loss / accumulation).backward()
            losses.append(loss.item())
            self.state.sentences_seen += len(batch["input_ids"])
            last_of_epoch = index + 1 == batches_per_epoch
            if (index + 1) % accumulation and not last_of_epoch:
                continue
            self._optimizer_step()
            self.state.epoch = epoch + (index + 1) / batches_per_epoch
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
            if self.state.global_step % self.config.logging.log_steps == 0:
                self._log(losses)
                losses = []
            if training.eval_steps and self.state.global_step % training.eval_steps == 0:
                self._log_evaluation()
            if stop.signal_number is not None:
                raise TrainingInterrupted(stop.signal_number, self.state.global_step)
            if self.state.global_step >= self.total_steps:
                break
        if losses:
            self._log(losses)
        if not training.eval_steps or self.state.global_step % training.eval_steps:
            self._log_evaluation()
