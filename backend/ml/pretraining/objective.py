"""Masked-language-model pre-training as an :class:`~backend.ml.training.objective.Objective`.

The fine-tuning trainer (:class:`backend.ml.training.trainer.Trainer`) runs it: the same
length-grouped batches, gradient accumulation, data parallelism, mixed precision, checkpoints,
signals and resume. What is particular to pre-training is here:

- **masking** (BERT's rule: 15% of the tokens chosen, of which 80% become ``[MASK]``, 10% a random
  token, 10% stay) is a pure function of (seed, epoch, sentence), drawn when an item is read. A
  resumed run and any number of processes therefore mask every sentence exactly as one
  uninterrupted process would.
- **the loss** of a sentence is the mean cross-entropy over its masked tokens (0 when none is
  masked), so the trainer's mean over the global batch's sentences is what one process computes
  whatever the number of processes or accumulation steps.
- **the held-out sentences** are masked once, with their own seed, so the loss before and after
  training (and at every evaluation) is measured on exactly the same masked tokens; it is the
  mean over every masked held-out token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ExperimentConfig
from ..training.distributed import World
from ..training.evaluation import move_to
from ..training.precision import Precision
from .model import MaskedLanguageModel, write_masked_lm

IGNORED = -100  # label of the tokens the loss does not score (unmasked ones)
MASKED_SHARE, RANDOM_SHARE = 0.8, 0.5  # of the chosen tokens; then of those not [MASK]ed


def tokenize_sentences(tokenizer, texts: list[str], max_length: int) -> list[dict]:
    """One unpadded item per sentence, with the mask of special tokens that are never masked."""
    encoded = tokenizer(texts, truncation=True, max_length=max_length, padding=False,
                        return_special_tokens_mask=True, return_token_type_ids=False)
    return [{"input_ids": encoded["input_ids"][row],
             "attention_mask": encoded["attention_mask"][row],
             "special_tokens_mask": encoded["special_tokens_mask"][row]}
            for row in range(len(texts))]


class MaskedSentences:
    """Tokenised sentences, each masked afresh per epoch as a function of (seed, epoch, index).

    ``set_epoch`` is called by the trainer at each epoch's start (DataLoader workers are started
    per epoch, so they see it too).

    >>> data = MaskedSentences(items, tokenizer, 0.15, seed=7)  # doctest: +SKIP
    >>> data[0]["labels"]  # doctest: +SKIP
    [-100, -100, 2023, -100, ...]
    """

    def __init__(self, items: list[dict], tokenizer, probability: float, seed: int):
        self.items, self.probability, self.seed = items, probability, seed
        self.mask_id, self.vocabulary = tokenizer.mask_token_id, len(tokenizer)
        self.lengths = [len(item["input_ids"]) for item in items]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        generator = torch.Generator().manual_seed(
            ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % 2 ** 63)
        ids = torch.tensor(item["input_ids"], dtype=torch.long)
        chances = torch.full(ids.shape, self.probability)
        chances[torch.tensor(item["special_tokens_mask"], dtype=torch.bool)] = 0.0
        chosen = torch.bernoulli(chances, generator=generator).bool()
        labels = torch.where(chosen, ids, torch.full_like(ids, IGNORED))
        masked = chosen & torch.bernoulli(torch.full(ids.shape, MASKED_SHARE),
                                          generator=generator).bool()
        randomised = chosen & ~masked & torch.bernoulli(torch.full(ids.shape, RANDOM_SHARE),
                                                        generator=generator).bool()
        random_ids = torch.randint(self.vocabulary, ids.shape, generator=generator)
        ids = torch.where(masked, torch.full_like(ids, self.mask_id),
                          torch.where(randomised, random_ids, ids))
        return {"input_ids": ids.tolist(), "attention_mask": item["attention_mask"],
                "labels": labels.tolist()}


class MaskedBatchCollator:
    """Pads masked items to the batch's longest: the pad id, attention 0, labels ignored."""

    def __init__(self, tokenizer):
        self.pad_id, self.left = tokenizer.pad_token_id, tokenizer.padding_side == "left"

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(item["input_ids"]) for item in items)
        batch = {name: torch.full((len(items), longest), fill, dtype=torch.long)
                 for name, fill in (("input_ids", self.pad_id), ("attention_mask", 0),
                                    ("labels", IGNORED))}
        for row, item in enumerate(items):
            size = len(item["input_ids"])
            columns = slice(longest - size, longest) if self.left else slice(0, size)
            for name in batch:
                batch[name][row, columns] = torch.tensor(item[name], dtype=torch.long)
        return batch


@dataclass
class HeldOutLoss:
    """The masked-language-model loss per masked held-out token, and its perplexity."""

    metrics: dict

    def prefixed_scalars(self) -> dict[str, float]:
        return {"eval/loss": self.metrics["loss"], "eval/perplexity": self.metrics["perplexity"]}

    def record(self) -> dict:
        """As results.json's ``heldout.before`` / ``heldout.after``."""
        return {"mlm_loss": self.metrics["loss"], "perplexity": self.metrics["perplexity"],
                "masked_tokens": self.metrics["masked_tokens"]}


class MaskedLanguageModelObjective:
    """A model with an MLM head, the corpus's training sentences, the masked-token loss."""

    selection_metric = "loss"
    keeps_best_model = False  # the encoder is the last weights, as the held-out loss says
    auxiliary_name: str | None = None
    auxiliary_weight = 0.0

    def __init__(self, built: MaskedLanguageModel, train_texts: list[str],
                 holdout_texts: list[str], config: ExperimentConfig, precision: Precision):
        self.built = built
        self.model: torch.nn.Module = built.model
        self.trained: torch.nn.Module = built.model
        self.precision = precision
        self.lr_scales: dict[int, float] = {}
        tokenizer, max_length = built.tokenizer, config.data.max_length
        probability = config.pretraining.mlm_probability
        self.train_data = MaskedSentences(tokenize_sentences(tokenizer, train_texts, max_length),
                                          tokenizer, probability, config.seed)
        self.collate = MaskedBatchCollator(tokenizer)
        held_out = MaskedSentences(tokenize_sentences(tokenizer, holdout_texts, max_length),
                                   tokenizer, probability, config.seed + 1)
        size = config.training.eval_batch_size
        self.holdout_batches = [self.collate([held_out[index] for index in
                                              range(start, min(start + size, len(held_out)))])
                                for start in range(0, len(held_out), size)]

    def losses(self, forward_model: torch.nn.Module, batch: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, None]:
        with self.precision.autocast():
            logits = forward_model(input_ids=batch["input_ids"],
                                   attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"]
        token_losses = torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORED,
            reduction="none").view(labels.shape)
        masked = (labels != IGNORED).sum(dim=1)
        return token_losses.sum(dim=1) / masked.clamp(min=1), None

    @torch.no_grad()
    def evaluate(self, world: World) -> HeldOutLoss:
        """The held-out loss, each process scoring every ``world.size``-th batch."""
        was_training = self.model.training
        self.model.eval()
        total, tokens = 0.0, 0
        for batch in self.holdout_batches[world.rank::world.size]:
            batch = move_to(batch, world.device)
            with self.precision.autocast():
                logits = self.model(input_ids=batch["input_ids"],
                                    attention_mask=batch["attention_mask"]).logits
            scored = batch["labels"] != IGNORED
            total += torch.nn.functional.cross_entropy(
                logits[scored].float(), batch["labels"][scored], reduction="sum").item()
            tokens += int(scored.sum())
        self.model.train(was_training)
        parts = world.gather((total, tokens))
        total, tokens = sum(part[0] for part in parts), sum(part[1] for part in parts)
        loss = total / max(tokens, 1)
        return HeldOutLoss({"loss": loss, "perplexity": math.exp(min(loss, 50.0)),
                            "masked_tokens": tokens})

    def save_model(self, directory: Path) -> None:
        write_masked_lm(self.built, directory)

    def evaluate_saved(self, directory: Path, world: World) -> HeldOutLoss:
        raise RuntimeError("pre-training keeps no best model to evaluate")

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, saved: dict) -> None:
        pass
