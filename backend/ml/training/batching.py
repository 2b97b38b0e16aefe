"""Training batches: length-grouped, shuffled, seeded, resumable, shared out across processes.

Padding a batch costs compute for every pad token, and a random batch of 32 BABE sentences pads
to the longest of 32 random lengths. Grouping sentences of similar length (transformers'
``group_by_length``) removes most of that padding. This sampler groups like transformers'
``LengthGroupedSampler`` (mega-batches of ``mega_batch_factor`` batches, each sorted by length and
cut into batches) with two differences: its mega-batches are always 50 batches, where
transformers uses min(n // (4 x batch), 50) (18 on 2,378 sentences at batch 32), so it groups
over a wider window; and it shuffles the batch order, where
transformers moves only the longest batch to the front. It is a pure function of (seed, epoch),
so a run resumed mid-epoch sees exactly the batches the interrupted run would have seen.

With several processes every batch here is a *global* batch of ``batch_size × world_size``
sentences, split into one contiguous share per process, so N processes with ``batch_size`` B see
the same global batches as one process with ``batch_size`` N·B.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


@dataclass(frozen=True)
class LocalBatch:
    """This process's share of one global batch."""

    indices: list[int]
    real_size: int
    """Sentences of ``indices`` that count; 0 when the global batch has fewer sentences than
    processes and this process only repeats one to take part in the gradient exchange."""
    global_size: int


class TrainingBatch(NamedTuple):
    """One collated batch with the share of the global batch it is, as the DataLoader yields it:
    the metadata travels with its tensors, whatever the number of workers."""

    share: LocalBatch
    inputs: dict[str, torch.Tensor]


class _SharesOf(Dataset):
    """``dataset`` indexed by whole ``LocalBatch``es (the DataLoader's ``__getitems__`` path), so
    that the collate function sees which share it is collating."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __getitems__(self, share: LocalBatch) -> tuple[LocalBatch, list[Any]]:
        return share, [self.dataset[index] for index in share.indices]


class _CollateShare:
    """Collates a share's items and keeps the share beside them (a class: workers pickle it)."""

    def __init__(self, collate: Callable[[list], dict]):
        self.collate = collate

    def __call__(self, fetched: tuple[LocalBatch, list[Any]]) -> TrainingBatch:
        share, items = fetched
        return TrainingBatch(share, self.collate(items))


class LengthGroupedBatchSampler(Sampler[LocalBatch]):
    """Batch indices for a ``DataLoader(batch_sampler=...)``, one epoch at a time.

    >>> sampler = LengthGroupedBatchSampler([5, 9, 3, 7, 4], batch_size=2, seed=0)
    >>> sampler.set_epoch(0)
    >>> sorted(len(batch.indices) for batch in sampler)
    [1, 2, 2]
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int,
                 group_by_length: bool = True, world_size: int = 1, rank: int = 0,
                 mega_batch_factor: int = 50):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.world_size = world_size
        self.rank = rank
        self.mega_batch_factor = mega_batch_factor
        self.epoch = 0
        self.start_batch = 0

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    @property
    def batches_per_epoch(self) -> int:
        return -(-len(self.lengths) // self.global_batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Iterate ``epoch``'s batches from ``start_batch`` on (a resumed run skips the rest)."""
        self.epoch, self.start_batch = epoch, start_batch

    def global_batches(self, epoch: int) -> list[list[int]]:
        """Every global batch of ``epoch``, in training order."""
        # Seeded per epoch, so a resumed run sees exactly the order the interrupted one would have.
        generator = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        order = torch.randperm(len(self.lengths), generator=generator).numpy()
        size = self.global_batch_size
        if not self.group_by_length:
            return [order[start:start + size].tolist() for start in range(0, len(order), size)]
        mega = size * self.mega_batch_factor
        batches = []
        for start in range(0, len(order), mega):
            chunk = order[start:start + mega]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[at:at + size].tolist() for at in range(0, len(chunk), size)]
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[index] for index in shuffled]

    def local_batches(self) -> list[LocalBatch]:
        """This process's share of each remaining batch of the current epoch."""
        return [self._share(batch) for batch in self.global_batches(self.epoch)[self.start_batch:]]

    def _share(self, batch: list[int]) -> LocalBatch:
        shares = np.array_split(np.asarray(batch), self.world_size)
        mine = shares[self.rank].tolist()
        if not mine:  # fewer sentences than processes: take part, but with no weight
            return LocalBatch([batch[0]], 0, len(batch))
        return LocalBatch(mine, len(mine), len(batch))

    def __iter__(self) -> Iterator[LocalBatch]:
        return iter(self.local_batches())

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch


def build_train_loader(dataset: Any, sampler: LengthGroupedBatchSampler,
                       collate: Callable[[list], dict], num_workers: int, pin_memory: bool
                       ) -> DataLoader:
    """A DataLoader of ``TrainingBatch``es over ``sampler``'s batches; workers only collate, the
    order stays the sampler's (and so stays reproducible whatever ``num_workers`` is)."""
    # Its own generator: a DataLoader iterator otherwise draws its worker seed from the global
    # RNG at every epoch start, and a run resumed mid-epoch would see different dropout masks.
    generator = torch.Generator().manual_seed(sampler.seed)
    # The sampler yields LocalBatches, fetched whole by _SharesOf.__getitems__; DataLoader's
    # annotations know only lists of indices.
    return DataLoader(_SharesOf(dataset), batch_sampler=cast(Any, sampler),
                      collate_fn=cast(Any, _CollateShare(collate)),
                      num_workers=num_workers, pin_memory=pin_memory, generator=generator)
