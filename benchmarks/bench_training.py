"""Training samples per second: per-batch (dynamic) padding versus padding to max_length.

    python benchmarks/bench_training.py                  # MiniLM, demo data, max_length 128
    python benchmarks/bench_training.py --steps 30 --max-length 256

The baseline pads every batch to ``data.max_length``, as a fixed-shape pipeline does. Both
paths start from the same weights, see the same batches in the same order and take the same
optimiser steps; only the padding differs, so the losses agree up to float rounding (padded
positions are masked). Each path is timed over ``--steps`` steps after one warm-up step.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from backend.ml.config import DataConfig, ModelConfig  # noqa: E402
from backend.ml.data import TokenizedDataset, make_collator, prepare_splits  # noqa: E402
from backend.ml.model_factory import ModelFactory  # noqa: E402
from backend.ml.training.evaluation import forward_logits  # noqa: E402


def pad_to(batch: dict, length: int, pad_token_id: int) -> dict:
    """The baseline: every batch padded to ``length`` tokens."""
    extra = length - batch["input_ids"].shape[1]
    return {**batch,
            "input_ids": torch.nn.functional.pad(batch["input_ids"], (0, extra),
                                                 value=pad_token_id),
            "attention_mask": torch.nn.functional.pad(batch["attention_mask"], (0, extra))}


def time_training(model, batches: list[dict]) -> tuple[float, list[float]]:
    """Seconds for the optimiser steps over ``batches`` (after one warm-up step), and the losses."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    loss_function = torch.nn.CrossEntropyLoss()
    model.train()
    losses = []
    started = None
    for number, batch in enumerate(batches):
        if number == 1:
            started = time.perf_counter()
        loss = loss_function(forward_logits(model, batch), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return time.perf_counter() - started, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed optimiser steps per path")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    splits = prepare_splits(DataConfig(dataset="demo", max_length=args.max_length), seed=0)
    built = ModelFactory.create(ModelConfig(model_name="minilm", dropout=0.0),
                                splits.label_names)
    dataset = TokenizedDataset(splits.train, built.tokenizer, args.max_length)
    collate = make_collator(built.tokenizer)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
    needed = (args.steps + 1) * args.batch_size
    order = (order * (needed // len(order) + 1))[:needed]
    dynamic = [collate([dataset[index] for index in order[start:start + args.batch_size]])
               for start in range(0, needed, args.batch_size)]
    padded = [pad_to(batch, args.max_length, built.tokenizer.pad_token_id) for batch in dynamic]

    initial_state = copy.deepcopy(built.model.state_dict())
    results = {}
    for name, batches in (("pad to max_length (baseline)", padded),
                          ("dynamic padding (this trainer)", dynamic)):
        built.model.load_state_dict(initial_state)
        seconds, losses = time_training(built.model, batches)
        tokens = sum(int(batch["input_ids"].numel()) for batch in batches[1:]) / args.steps
        results[name] = (args.steps * args.batch_size / seconds, tokens, losses)

    print(f"MiniLM-L6, demo sentences, batch {args.batch_size}, max_length {args.max_length}, "
          f"{args.steps} timed steps, {torch.get_num_threads()} thread(s)\n")
    print(f"{'path':<32}{'samples/s':>11}{'tokens/batch':>14}")
    for name, (speed, tokens, _) in results.items():
        print(f"{name:<32}{speed:>11.1f}{tokens:>14.0f}")
    (baseline_speed, _, baseline_losses), (speed, _, losses) = results.values()
    drift = max(abs(a - b) for a, b in zip(baseline_losses, losses))
    print(f"\ndynamic padding vs pad to max_length: {speed / baseline_speed:.2f}x samples/s; "
          f"max loss difference over the same steps {drift:.1e}")


if __name__ == "__main__":
    main()
