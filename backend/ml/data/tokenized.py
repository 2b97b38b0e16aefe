"""Tokenised datasets and the collator that pads each batch only to its longest sentence.

Sentences are tokenised once, without padding; ``lengths`` lets a sampler group sentences of
similar length, so short batches stay short (BABE sentences run from 3 to ~120 tokens, and
padding all of them to max_length would multiply the compute).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .splits import SplitData

TEACHER_TARGETS = ("soft_targets", "teacher_embeddings")
"""Per-sentence float vectors a distilled run's items carry beside the tokens."""


class TokenizedDataset(Dataset):
    """One split, tokenised once (truncated to ``max_length``, unpadded).

    >>> dataset = TokenizedDataset(splits.train, tokenizer, max_length=128)  # doctest: +SKIP
    >>> dataset[0]  # doctest: +SKIP
    {'input_ids': [101, 1996, ..., 102], 'attention_mask': [1, 1, ..., 1], 'labels': 1}
    """

    def __init__(self, split: SplitData, tokenizer, max_length: int,
                 tag_biased_words: bool = False,
                 teacher_targets: Mapping[str, Sequence | np.ndarray] | None = None):
        texts = list(split.texts)
        # What a teacher says of each sentence, for distillation: its class probabilities
        # (soft_targets), its sentence embedding (teacher_embeddings).
        self.teacher_targets = dict(teacher_targets or {})
        for name, values in self.teacher_targets.items():
            if len(values) != len(texts):
                raise ValueError(f"{len(values)} {name} for {len(texts)} sentences")
        self.token_labels: list[list[int]] | None = None
        if texts:
            encoded = tokenizer(texts, truncation=True, max_length=max_length, padding=False,
                                return_attention_mask=True, return_token_type_ids=False)
            self.input_ids = [list(ids) for ids in encoded["input_ids"]]
            self.attention_mask = [list(mask) for mask in encoded["attention_mask"]]
            if tag_biased_words:
                self.token_labels = biased_word_tags(encoded, texts, split.biased_words)
        else:
            self.input_ids, self.attention_mask = [], []
        # An unlabelled split (inference) gives items without "labels".
        self.labels = [int(label) for label in split.labels] if split.labels else None
        self.lengths = [len(ids) for ids in self.input_ids]  # tokens per sentence

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict:
        item: dict[str, Any] = {"input_ids": self.input_ids[index],
                                            "attention_mask": self.attention_mask[index]}
        if self.labels is not None:
            item["labels"] = self.labels[index]
        if self.token_labels is not None:
            item["token_labels"] = self.token_labels[index]
        for name, values in self.teacher_targets.items():
            item[name] = values[index]
        return item


def biased_word_tags(encoded, texts: list[str], biased_words: list[list[str]]) -> list[list[int]]:
    """Per token: 1 inside a word BABE marks as biased, 0 inside another word, -100 (ignored by
    the loss) on special tokens. Words are compared lowercased, without surrounding punctuation.

    Needs a fast tokenizer (its word alignment); every tokenizer this project builds is one.
    """
    if not encoded.is_fast:
        raise ValueError("tagging biased words needs a fast tokenizer (word alignment)")
    tags = []
    for row, text in enumerate(texts):
        marked = set(biased_words[row]) if row < len(biased_words) else set()
        row_tags = []
        for word in encoded.word_ids(row):
            if word is None:
                row_tags.append(-100)
                continue
            span = encoded.word_to_chars(row, word)
            token_word = text[span.start:span.end].lower().strip(_PUNCTUATION)
            row_tags.append(int(token_word in marked))
        tags.append(row_tags)
    return tags


_PUNCTUATION = "\"'“”‘’.,;:!?()[]{}"


class PaddingCollator:
    """Pads a batch to its longest item with the tokenizer's own ``pad`` (as transformers'
    ``DataCollatorWithPadding`` does), and BABE's per-token ``token_labels`` alongside with -100;
    a teacher's ``soft_targets`` and ``teacher_embeddings`` are stacked as they are. A class so
    that DataLoader worker processes can pickle it."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        sentences = [{key: value for key, value in feature.items()
                      if key != "token_labels" and key not in TEACHER_TARGETS}
                     for feature in features]
        batch = dict(self.tokenizer.pad(sentences, padding="longest", return_tensors="pt"))
        for name in TEACHER_TARGETS:
            if name in features[0]:
                batch[name] = torch.as_tensor(np.asarray([feature[name] for feature in features],
                                                         dtype=np.float32))
        if "token_labels" in features[0]:
            batch["token_labels"] = self._pad_token_labels(
                [feature["token_labels"] for feature in features], batch["input_ids"].shape[1])
        return batch

    def _pad_token_labels(self, rows: list[list[int]], longest: int) -> torch.Tensor:
        padded = torch.full((len(rows), longest), -100, dtype=torch.long)
        for position, row in enumerate(rows):
            columns = (slice(0, len(row)) if self.tokenizer.padding_side == "right"
                       else slice(longest - len(row), longest))
            padded[position, columns] = torch.tensor(row, dtype=torch.long)
        return padded


def make_collator(tokenizer) -> PaddingCollator:
    """A DataLoader ``collate_fn`` padding each batch to its longest sentence, never max_length.

    >>> collate = make_collator(tokenizer)  # doctest: +SKIP
    >>> loader = DataLoader(dataset, batch_size=16, collate_fn=collate)  # doctest: +SKIP
    """
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no padding token; set tokenizer.pad_token (for "
                         "example to its eos_token) before batching")
    return PaddingCollator(tokenizer)
