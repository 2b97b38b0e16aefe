"""Train / validation / test splits and cross-validation folds, stratified and seeded.

All randomness comes from one seed, data.split_seed or else the config's seed: the same seed
gives the same sentences in the same splits on every machine. Stratification keeps each class's
share in every split (a class too small to reach every split, such as SG2's single "No
agreement" sentence, lands in some).
"""

from __future__ import annotations

import ast
import dataclasses
import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError
from .labels import NO_AGREEMENT, label_names_for
from .loading import load_sentences
from .preprocessing import preprocess_text, sentence_key

logger = logging.getLogger(__name__)

METADATA_FIELDS = ("outlet", "topic", "type", "news_link", "source_row")


@dataclass
class SplitData:
    """The sentences of one split: texts, class ids and per-sentence metadata, index-aligned."""

    texts: list[str]
    labels: list[int]
    metadata: list[dict] = field(default_factory=list)  # outlet, topic, type, news_link, source_row
    biased_words: list[list[str]] = field(default_factory=list)
    """Per sentence, the words BABE's annotators marked as biased (lowercased; empty if none)."""

    def __len__(self) -> int:
        return len(self.texts)

    def label_counts(self, label_names) -> dict[str, int]:
        """Sentences per class name, every class listed (zero included).

        >>> SplitData(["a", "b"], [1, 1]).label_counts(["Non-biased", "Biased"])
        {'Non-biased': 0, 'Biased': 2}
        """
        counts = {name: 0 for name in label_names}
        for label in self.labels:
            counts[label_names[label]] += 1
        return counts


@dataclass
class DataSplits:
    """Train, validation and test splits with the class names their ids refer to."""

    train: SplitData
    validation: SplitData
    test: SplitData
    label_names: list[str]
    source: str
    dataset: str
    counts: dict[str, int] = field(default_factory=dict)  # what happened to the loaded rows
    fold: int | None = None  # 1-based fold number in cross-validation
    num_folds: int | None = None

    def summary(self) -> dict:
        """Sizes and label counts per split, for results.json.

        >>> splits.summary()["splits"]["test"]  # doctest: +SKIP
        {'size': 40, 'label_counts': {'Non-biased': 16, 'Biased': 18, 'No agreement': 6}}
        """
        splits = (("train", self.train), ("validation", self.validation), ("test", self.test))
        result: dict[str, Any] = {
            "dataset": self.dataset, "source": self.source, "label_names": list(self.label_names),
            "splits": {name: {"size": len(split),
                              "label_counts": split.label_counts(self.label_names)}
                       for name, split in splits},
        }
        if self.counts:
            result["counts"] = dict(self.counts)
        if self.fold is not None:
            result["fold"], result["num_folds"] = self.fold, self.num_folds
        return result


@dataclass
class _Pool:
    """Every sentence that goes into the splits, after filtering, preprocessing and sampling."""

    texts: list[str]
    labels: np.ndarray
    metadata: list[dict]
    biased_words: list[list[str]]
    label_names: list[str]
    source: str
    counts: dict[str, int]

    def subset(self, indices: np.ndarray) -> SplitData:
        return SplitData([self.texts[i] for i in indices], [int(self.labels[i]) for i in indices],
                         [self.metadata[i] for i in indices],
                         [self.biased_words[i] for i in indices])


def _apportion(class_sizes: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``size`` over classes in proportion to ``class_sizes`` (largest remainder, exact)."""
    total = int(class_sizes.sum())
    quotas = class_sizes * size // total
    remainders = class_sizes * size % total
    missing = size - int(quotas.sum())
    # Largest remainder first; ties broken at random so no class is always favoured.
    order = np.lexsort((rng.random(len(class_sizes)), -remainders))
    quotas[order[:missing]] += 1
    return quotas


def stratified_take(indices: np.ndarray, labels: np.ndarray, size: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``size`` of ``indices`` keeping class proportions; returns (taken, rest), sorted.

    >>> labels = np.array([0] * 6 + [1] * 4)
    >>> taken, rest = stratified_take(np.arange(10), labels, 5, np.random.default_rng(0))
    >>> np.bincount(labels[taken]).tolist(), len(rest)
    ([3, 2], 5)
    """
    indices = np.asarray(indices)
    if size <= 0:
        return indices[:0], np.sort(indices)
    if size >= len(indices):
        return np.sort(indices), indices[:0]
    classes, inverse = np.unique(labels[indices], return_inverse=True)
    quotas = _apportion(np.bincount(inverse, minlength=len(classes)), size, rng)
    taken = np.concatenate([rng.permutation(indices[inverse == position])[:quota]
                            for position, quota in enumerate(quotas)])
    taken = np.sort(taken)
    return taken, np.setdiff1d(indices, taken)


def _share(count: int, share: float) -> int:
    return math.floor(count * share + 0.5)


def split_sizes(total: int, train_split: float, validation_split: float) -> tuple[int, int, int]:
    """(train, validation, test) sizes summing to ``total``; validation and test get at least one.

    >>> split_sizes(400, 0.8, 0.1)
    (320, 40, 40)
    """
    validation = max(1, _share(total, validation_split))
    test = max(1, total - _share(total, train_split) - validation)
    train = total - validation - test
    if train < 1:
        raise DataError(f"only {total} sentence(s): too few for a train, a validation and a test "
                        f"split; use more data (data.max_samples) or fewer splits")
    return train, validation, test


def _prepare_pool(data_config, seed: int) -> _Pool:
    frame = load_sentences(data_config)
    source = frame.attrs.get("source", "")
    counts = {"loaded": len(frame)}
    for key in ("blank_rows_skipped", "duplicate_texts", "types_derived"):
        if key in frame.attrs:
            counts[key] = int(frame.attrs[key])
    label_names = label_names_for(data_config.filter_no_agreement)
    if data_config.filter_no_agreement:
        keep = frame["label"] != NO_AGREEMENT
        counts["removed_no_agreement"] = int((~keep).sum())
        logger.info("removed %d 'No agreement' sentence(s) (data.filter_no_agreement)",
                    counts["removed_no_agreement"])
        frame = frame[keep]
    if frame.empty:
        raise DataError(f"{source}: no sentences left to split")
    labels = frame["label"].map(label_names.index).to_numpy()
    texts = [preprocess_text(text, data_config.preprocessing) for text in frame["text"]]
    metadata = [{**row, "source_row": int(row["source_row"])}
                for row in frame[list(METADATA_FIELDS)].to_dict("records")]
    biased_words = [parse_biased_words(value) for value in frame["biased_words"]]
    pool = _Pool(texts, labels, metadata, biased_words, label_names, source, counts)
    if data_config.max_samples and data_config.max_samples < len(texts):
        rng = np.random.default_rng([seed, 1])
        kept, _ = stratified_take(np.arange(len(texts)), labels, data_config.max_samples, rng)
        counts["removed_by_max_samples"] = len(texts) - len(kept)
        pool = _Pool([texts[i] for i in kept], labels[kept], [metadata[i] for i in kept],
                     [biased_words[i] for i in kept], label_names, source, counts)
    counts["used"] = len(pool.texts)
    return pool


def split_seed(data_config, seed: int) -> int:
    """The seed that draws the splits: data.split_seed when set, else ``seed`` (the config's).

    >>> split_seed(DataConfig(split_seed=42), seed=1)  # doctest: +SKIP
    42
    """
    return seed if data_config.split_seed is None else int(data_config.split_seed)


def parse_biased_words(value) -> list[str]:
    """BABE's ``biased_words`` cell (a Python list literal) as lowercased words.

    >>> parse_biased_words("['Flood', 'illegal']")
    ['flood', 'illegal']
    >>> parse_biased_words("")
    []
    """
    if not isinstance(value, str) or not value.strip().startswith("["):
        return []
    try:
        words = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return []
    return [word.strip().lower() for word in words if isinstance(word, str) and word.strip()]


def prepare_splits(data_config, seed: int) -> DataSplits:
    """Load, filter, preprocess and split the configured data into train / validation / test.

    Shares come from data.train_split and data.validation_split (test is the rest); each split
    keeps the class proportions and lists its sentences in file order.

    >>> splits = prepare_splits(DataConfig(dataset="demo"), seed=42)  # doctest: +SKIP
    >>> len(splits.train), len(splits.validation), len(splits.test)  # doctest: +SKIP
    (320, 40, 40)
    """
    seed = split_seed(data_config, seed)
    pool = _prepare_pool(data_config, seed)
    if data_config.validation_path or data_config.test_path:
        return _splits_with_fixed_files(pool, data_config, seed)
    _, n_validation, n_test = split_sizes(len(pool.texts), data_config.train_split,
                                          data_config.validation_split)
    rng = np.random.default_rng([seed, 0])
    test, rest = stratified_take(np.arange(len(pool.texts)), pool.labels, n_test, rng)
    validation, train = stratified_take(rest, pool.labels, n_validation, rng)
    return DataSplits(pool.subset(train), pool.subset(validation), pool.subset(test),
                      pool.label_names, pool.source, data_config.dataset, dict(pool.counts))


def _fixed_split(data_config, path: str, seed: int) -> SplitData:
    """Every sentence of ``path`` (a BABE file or directory), filtered and preprocessed alike."""
    fixed_config = dataclasses.replace(data_config, dataset="babe", path=path, max_samples=0)
    pool = _prepare_pool(fixed_config, seed)
    return pool.subset(np.arange(len(pool.texts)))


def _splits_with_fixed_files(pool: _Pool, data_config, seed: int) -> DataSplits:
    """Validation and/or test from their own files (data.validation_path, data.test_path), the
    rest of the shares from data.path, after dropping its sentences found in a fixed file."""
    fixed = {name: _fixed_split(data_config, path, seed) for name, path in
             (("validation", data_config.validation_path), ("test", data_config.test_path))
             if path}
    held_out = {sentence_key(text) for split in fixed.values() for text in split.texts}
    overlapping = [index for index, text in enumerate(pool.texts)
                   if sentence_key(text) in held_out]
    counts = dict(pool.counts)
    if overlapping:
        logger.warning("%d sentence(s) of %s also occur in the validation or test file and were "
                       "dropped from training", len(overlapping), pool.source)
        counts["overlap_removed_from_train"] = len(overlapping)
    indices = np.setdiff1d(np.arange(len(pool.texts)), overlapping)
    rng = np.random.default_rng([seed, 0])
    train_share, validation_share = data_config.train_split, data_config.validation_split
    if "test" not in fixed:
        test_share = (1 - train_share - validation_share) / (1 - validation_share)
        taken, indices = stratified_take(indices, pool.labels,
                                         max(1, _share(len(indices), test_share)), rng)
        fixed["test"] = pool.subset(taken)
    if "validation" not in fixed:
        share = validation_share / (train_share + validation_share)
        taken, indices = stratified_take(indices, pool.labels,
                                         max(1, _share(len(indices), share)), rng)
        fixed["validation"] = pool.subset(taken)
    shared = ({sentence_key(text) for text in fixed["validation"].texts}
              & {sentence_key(text) for text in fixed["test"].texts})
    if shared:
        logger.warning("%d sentence(s) occur in both the validation and the test split; scores "
                       "on them are not independent", len(shared))
        counts["overlap_validation_test"] = len(shared)
    if not len(indices):
        raise DataError(f"{pool.source}: no training sentences left after removing the ones in "
                        f"the validation and test files")
    sources = [f"train: {pool.source}"] + [
        f"{name}: {path}" for name, path in (("validation", data_config.validation_path),
                                             ("test", data_config.test_path)) if path]
    return DataSplits(pool.subset(indices), fixed["validation"], fixed["test"], pool.label_names,
                      "; ".join(sources), data_config.dataset, counts)


def prepare_cv_folds(data_config, seed: int) -> list[DataSplits]:
    """data.cv_folds stratified folds: fold k tests on the k-th part and trains on the rest.

    The folds come from sklearn's StratifiedKFold (shuffled, random_state: the split seed);
    each fold's validation split is a stratified share validation_split / (train_split +
    validation_split) of its non-test sentences.

    >>> folds = prepare_cv_folds(DataConfig(dataset="demo", cv_folds=5), seed=42)  # doctest: +SKIP
    >>> [len(fold.test) for fold in folds]  # doctest: +SKIP
    [80, 80, 80, 80, 80]
    """
    from sklearn.model_selection import StratifiedKFold

    num_folds = int(data_config.cv_folds)
    if num_folds < 2:
        raise DataError(f"data.cv_folds: cross-validation needs at least 2 folds, got {num_folds}")
    seed = split_seed(data_config, seed)
    pool = _prepare_pool(data_config, seed)
    if num_folds > len(pool.texts):
        raise DataError(f"data.cv_folds: {num_folds} folds need at least {num_folds} sentences, "
                        f"{pool.source} has {len(pool.texts)}")
    splitter = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parts = list(splitter.split(np.zeros(len(pool.texts)), pool.labels))
        except ValueError as error:
            raise DataError(f"data.cv_folds: cannot make {num_folds} stratified folds of "
                            f"{pool.source}: {error}") from None
    for warning in caught:  # e.g. a class smaller than the number of folds
        logger.warning("cross-validation folds: %s", warning.message)
    share = data_config.validation_split / (data_config.train_split + data_config.validation_split)
    folds = []
    for number, (rest, test) in enumerate(parts, start=1):
        n_validation = max(1, _share(len(rest), share))
        if n_validation >= len(rest):
            raise DataError(f"fold {number} has only {len(rest)} non-test sentence(s): too few "
                            f"for training and validation")
        rng = np.random.default_rng([seed, 2, number])
        validation, train = stratified_take(rest, pool.labels, n_validation, rng)
        folds.append(DataSplits(pool.subset(train), pool.subset(validation),
                                pool.subset(np.sort(test)), pool.label_names, pool.source,
                                data_config.dataset, dict(pool.counts), fold=number,
                                num_folds=num_folds))
    return folds
