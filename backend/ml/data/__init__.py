"""Data layer: BABE and demo loading, preprocessing, splits, CV folds and tokenised datasets.

>>> from backend.ml.data import prepare_splits
>>> splits = prepare_splits(config.data, seed=config.seed)  # doctest: +SKIP
>>> splits.summary()["splits"]["train"]["size"]  # doctest: +SKIP
320
"""

from .labels import LABEL_NAMES, label_names_for
from .loading import BABE_HUB_ID, DEMO_FILE, load_sentences
from .preprocessing import PREPROCESSING_MODES, preprocess_text
from .splits import DataSplits, SplitData, prepare_cv_folds, prepare_splits
from .tokenized import PaddingCollator, TokenizedDataset, make_collator

__all__ = ["BABE_HUB_ID", "DEMO_FILE", "LABEL_NAMES", "PREPROCESSING_MODES", "DataSplits",
           "PaddingCollator", "SplitData", "TokenizedDataset", "label_names_for",
           "load_sentences", "make_collator", "preprocess_text", "prepare_cv_folds",
           "prepare_splits"]
