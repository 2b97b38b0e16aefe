"""The unlabelled sentences a pre-training run reads: configured data, text files, exclusions.

Sentences are preprocessed as fine-tuning will see them (``data.preprocessing``), duplicates
are kept once, and every sentence of ``data.test_path`` and of ``pretraining.exclude_files`` is
removed, so an encoder can be pre-trained without reading the sentences it will be scored on.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np

from ..data.loading import load_sentences
from ..data.preprocessing import preprocess_text, sentence_key
from ..errors import DataError
from ..text_files import read_texts

logger = logging.getLogger(__name__)

class SourceReading(TypedDict):
    """One file (or the configured dataset) read: where from and how many sentences."""

    source: str
    sentences: int


@dataclass
class Corpus:
    """Pre-training sentences: ``train`` to learn from, ``holdout`` to measure the MLM loss on."""

    train: list[str]
    holdout: list[str]
    sources: list[SourceReading] = field(default_factory=list)
    """One per file read, in reading order."""
    counts: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """What results.json records under ``data``."""
        return {"sources": self.sources, "train_sentences": len(self.train),
                "holdout_sentences": len(self.holdout), **self.counts}


def _excluded_keys(config) -> tuple[set[str], list[str]]:
    """Sentence keys never to pre-train on, and where they come from."""
    keys: set[str] = set()
    origins = []
    if config.data.test_path:
        test_config = dataclasses.replace(config.data, dataset="babe", path=config.data.test_path)
        keys |= {sentence_key(text) for text in load_sentences(test_config)["text"]}
        origins.append(f"data.test_path {config.data.test_path}")
    for path in config.pretraining.exclude_files:
        keys |= {sentence_key(text) for text in read_texts(path)}
        origins.append(str(path))
    return keys, origins


def collect_corpus(config) -> Corpus:
    """Read, preprocess, deduplicate and split the pre-training sentences of ``config``.

    >>> corpus = collect_corpus(ExperimentConfig(data=DataConfig(dataset="demo")))  # doctest: +SKIP
    >>> len(corpus.train), len(corpus.holdout)  # doctest: +SKIP
    (380, 20)
    """
    readings: list[tuple[str, list[str]]] = []
    if config.pretraining.use_configured_data:
        frame = load_sentences(config.data)
        readings.append((frame.attrs.get("source", config.data.dataset), list(frame["text"])))
    readings += [(str(path), read_texts(path)) for path in config.pretraining.text_files]
    excluded, excluded_from = _excluded_keys(config)

    sentences, seen = [], set()
    counts = {"loaded": 0, "duplicates_removed": 0, "excluded": 0}
    sources: list[SourceReading] = []
    for source, texts in readings:
        sources.append({"source": source, "sentences": len(texts)})
        for text in texts:
            counts["loaded"] += 1
            text = preprocess_text(text, config.data.preprocessing)
            key = sentence_key(text)
            if key in excluded:
                counts["excluded"] += 1
            elif key in seen:
                counts["duplicates_removed"] += 1
            elif key:
                seen.add(key)
                sentences.append(text)
    recorded: dict[str, int | list[str]] = dict(counts)
    if excluded_from:
        recorded["excluded_from"] = excluded_from
        logger.info("left out %d sentence(s) found in %s", counts["excluded"],
                    ", ".join(excluded_from))
    if len(sentences) < 2:
        raise DataError(f"only {len(sentences)} distinct sentence(s) to pre-train on (read "
                        f"{counts['loaded']} from {', '.join(s['source'] for s in sources)}); "
                        f"add sentences with pretraining.text_files")
    order = np.random.default_rng([config.seed, 2]).permutation(len(sentences))
    holdout_size = min(len(sentences) - 1,
                       max(1, round(config.pretraining.holdout_share * len(sentences))))
    holdout = sorted(order[:holdout_size].tolist())
    train = sorted(order[holdout_size:].tolist())
    return Corpus([sentences[i] for i in train], [sentences[i] for i in holdout], sources,
                  recorded)
