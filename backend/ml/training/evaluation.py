"""Evaluating a model on a split: batched, length-sorted, in inference mode."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from ..data import SplitData, TokenizedDataset, make_collator
from ..metrics import EvaluationResult
from ..models.outputs import model_logits
from .distributed import World
from .precision import Precision


def move_to(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device) for key, value in batch.items()}


def forward_logits(model, batch: dict) -> torch.Tensor:
    """Run the classifier on a collated batch.

    Only ids and mask are passed: every family takes them.
    """
    return model_logits(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))


@torch.inference_mode()
def evaluate(model, tokenizer, split: SplitData, split_name: str, label_names: list[str],
             max_length: int, batch_size: int, device: torch.device,
             loss_function: torch.nn.Module | None = None, precision: Precision | None = None,
             world: World | None = None,
             dataset: TokenizedDataset | None = None) -> EvaluationResult:
    """Metrics, logits and loss of ``model`` on ``split``; results are in the split's order.

    Sentences are batched by length (less padding, faster) and put back in order afterwards.
    With several processes each evaluates every ``world.size``-th batch and all of them get every
    sentence's logits exactly once, so every process computes the same metrics.
    """
    started = time.perf_counter()
    world = world or World(rank=0, size=1, device=device)
    autocast = precision.autocast() if precision else contextlib.nullcontext()
    if dataset is None:
        dataset = TokenizedDataset(split, tokenizer, max_length)
    collate = make_collator(tokenizer)
    order = np.argsort(np.asarray(dataset.lengths), kind="stable")
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    loss_function = loss_function or torch.nn.CrossEntropyLoss()
    indices, parts, total_loss = [], [], 0.0
    was_training = model.training
    model.eval()
    for batch_indices in batches[world.rank::world.size]:
        batch = move_to(collate([dataset[int(index)] for index in batch_indices]), device)
        with autocast:
            batch_logits = forward_logits(model, batch).float()
        total_loss += float(loss_function(batch_logits, batch["labels"])) * len(batch_indices)
        indices.append(batch_indices)
        parts.append(batch_logits.cpu().numpy())
    model.train(was_training)
    logits = np.zeros((len(dataset), len(label_names)), dtype=np.float32)
    loss = 0.0
    for rank_indices, rank_parts, rank_loss in world.gather((indices, parts, total_loss)):
        for batch_indices, batch_logits in zip(rank_indices, rank_parts):
            logits[batch_indices] = batch_logits
        loss += rank_loss
    return EvaluationResult(split_name, label_names, np.asarray(split.labels), logits, split.texts,
                            split.metadata, loss=loss / max(len(dataset), 1),
                            seconds=time.perf_counter() - started)
