"""The teacher of a distilled run: which models teach it, what they say about its training
sentences (computed once and cached in the run directory), and the unlabelled sentences they
label for it.

Under cross-validation, fold k's student learns from fold k of a cross-validation teacher (of
each one, when a list of teachers forms an ensemble) and from nothing else: that model never
saw fold k's test sentences, and the teacher's own test predictions are checked to prove it.
Any other teacher could have trained on the student's test fold and would leak it into the
student's score.

>>> data = prepare_distillation(config, splits, run_dir, world, precision)  # doctest: +SKIP
>>> len(data.soft_targets) == len(data.splits.train)  # doctest: +SKIP
True
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import SEED_PLACEHOLDER, ExperimentConfig
from .data import DataSplits, SplitData, TokenizedDataset, make_collator
from .data.preprocessing import preprocess_text, sentence_key
from .errors import UserError
from .fileio import atomic_path, atomic_write_text
from .inference.loading import cross_validation_models, resolve_model_path, run_dir_of
from .inference.sentences import split_sentences
from .models import BaseBiasClassifier, load_saved_model
from .models.outputs import model_logits, sentence_embedding
from .registry import DEFAULT_REGISTRY_DIR, STAGES, ModelRegistry
from .run_directory import DEFAULT_RUNS_DIR, RunLayout
from .text_files import read_texts
from .training.distributed import World
from .training.evaluation import move_to
from .training.interruption import StopRequests, TrainingInterrupted
from .training.precision import Precision

logger = logging.getLogger(__name__)


@dataclass
class DistillationData:
    """What a distilled run trains on."""

    splits: DataSplits
    """The run's splits, training extended by the unlabelled sentences the teacher labelled."""
    soft_targets: np.ndarray
    """The teacher's probabilities at the distillation temperature, per training sentence."""
    summary: dict
    """results.json's ``distillation``: teacher, models, temperature, weight, sentence counts."""
    teacher_embeddings: np.ndarray | None = None
    """The teacher's sentence embedding per training sentence (each model's side by side), when
    ``embedding_weight`` asks for them."""

    def teacher_targets(self) -> dict[str, np.ndarray]:
        """What the student learns per training sentence besides its label, by batch key."""
        targets = {"soft_targets": self.soft_targets}
        if self.teacher_embeddings is not None:
            targets["teacher_embeddings"] = self.teacher_embeddings
        return targets


def prepare_distillation(config: ExperimentConfig, splits: DataSplits, run_dir: Path,
                         world: World, precision: Precision,
                         runs_dir: Path = DEFAULT_RUNS_DIR,
                         stop: StopRequests | None = None) -> DistillationData | None:
    """The teacher's targets for ``splits`` (None when the config distils nothing).

    The teacher's pass takes minutes on a CPU with an ensemble and many sentences: a stop
    request (the run session's ``stop``) ends it at the next batch with ``TrainingInterrupted``.
    """
    distillation = config.training.distillation
    if not distillation.teacher:
        return None
    references = teacher_references(config)
    models = teaching_models(config, splits, runs_dir)
    unlabelled, counts, augmented, augmented_counts = teacher_labelled_sentences(config, splits)
    teacher_labelled = unlabelled + augmented
    texts = list(splits.train.texts) + teacher_labelled
    logits, embeddings = _teacher_outputs(RunLayout(run_dir), models, texts, config, world,
                                          precision, stop)
    soft = _ensemble_probabilities(logits, distillation.temperature)
    # Teacher-labelled sentences take the teacher's class (its plain probabilities) as hard label.
    teacher_labels = _ensemble_probabilities(logits, 1.0)[len(splits.train):].argmax(axis=1)
    train = splits.train
    extended = SplitData(
        texts, list(train.labels) + [int(label) for label in teacher_labels],
        list(train.metadata) + [{} for _ in teacher_labelled] if train.metadata else [],
        list(train.biased_words) + [[] for _ in teacher_labelled] if train.biased_words else [])
    summary = {"teacher": distillation.teacher, "teacher_models": [str(path) for path in models],
               "temperature": distillation.temperature, "soft_weight": distillation.soft_weight,
               "unlabelled": counts}
    if embeddings is not None:
        summary.update(embedding_weight=distillation.embedding_weight,
                       teacher_embedding_size=int(embeddings.shape[1]))
    if distillation.augmented_copies:
        summary.update(augmented_copies=distillation.augmented_copies,
                       augmentation_rate=distillation.augmentation_rate,
                       augmented=augmented_counts)
    logger.info("Distilling from %s (%d model%s) into %d labelled and %d teacher-labelled "
                "sentences (%d of them perturbed copies)", " + ".join(references), len(models),
                "s" * (len(models) > 1), len(train), len(teacher_labelled), len(augmented))
    return DistillationData(dataclasses.replace(splits, train=extended), soft, summary,
                            embeddings)


def teacher_labelled_sentences(config: ExperimentConfig, splits: DataSplits
                               ) -> tuple[list[str], dict, list[str], dict]:
    """The sentences the teacher labels besides the training split, with their counts: those of
    the unlabelled files, then the perturbed copies of the training sentences."""
    distillation = config.training.distillation
    unlabelled, counts = unlabelled_sentences(distillation.unlabelled_files, splits,
                                              config.data.preprocessing,
                                              distillation.split_articles)
    rng = np.random.default_rng([config.seed, int(splits.fold or 0)])
    augmented, augmented_counts = new_sentences(
        augmented_sentences(splits.train.texts, distillation.augmented_copies,
                            distillation.augmentation_rate, rng),
        splits, already_kept=unlabelled)
    return unlabelled, counts, augmented, augmented_counts


def teaching_models(config: ExperimentConfig, splits: DataSplits,
                    runs_dir: Path = DEFAULT_RUNS_DIR) -> list[Path]:
    """Every model that teaches ``splits`` (each teacher's, in the configured order), checked:
    present, each counted once, the run's classes, and under cross-validation the same fold."""
    references = teacher_references(config)
    models = [model for reference in references
              for model in teacher_models(reference, splits, runs_dir)]
    if len(set(models)) < len(models):
        raise UserError(f"training.distillation.teacher: {' + '.join(references)} names the "
                        f"same model more than once ({', '.join(str(path) for path in models)}); "
                        f"list each teacher once")
    _check_labels(models, splits.label_names)
    return models


def check_teachers(config: ExperimentConfig, splits: Iterable[DataSplits],
                   runs_dir: Path = DEFAULT_RUNS_DIR) -> None:
    """Refuse a teacher that cannot teach every one of ``splits`` (a run's, or each fold's)
    before anything is trained or written: missing, other classes, or another fold."""
    if config.training.distillation.teacher:
        for each in splits:
            teaching_models(config, each, runs_dir)


def teacher_references(config: ExperimentConfig) -> list[str]:
    """The configured teacher as a list (one reference, or each of an ensemble's), with
    ``{seed}`` replaced by the run's seed: one recipe then names each seed's own teacher."""
    return [reference.replace(SEED_PLACEHOLDER, str(config.seed))
            for reference in config.training.distillation.teacher_list()]


def teacher_models(reference: str, splits: DataSplits, runs_dir: Path = DEFAULT_RUNS_DIR
                   ) -> list[Path]:
    """The model directories that teach ``splits``: one model, a CV run's folds as an ensemble,
    or, for a fold of a cross-validation student, the teacher's model of that same fold."""
    if reference in STAGES and not Path(reference).exists():
        reference = str(ModelRegistry(DEFAULT_REGISTRY_DIR).run_dir(reference))
    try:
        folds = cross_validation_models(reference, runs_dir)
        # One model must exist too, even where the student is about to refuse it.
        models = folds or [resolve_model_path(reference, runs_dir)]
    except UserError as error:
        raise UserError(f"training.distillation.teacher: {error}") from error
    if splits.fold is None:
        return models
    if folds is None:
        raise UserError(
            f"training.distillation.teacher: {reference} is a single model, but this run "
            f"cross-validates: a teacher that trained on fold {splits.fold}'s test sentences "
            f"would leak them into its student. Use a cross-validation run with the same data, "
            f"seed and data.cv_folds as the teacher: each fold then learns from the same fold")
    if len(folds) != splits.num_folds:
        raise UserError(f"training.distillation.teacher: {reference} has {len(folds)} folds, "
                        f"this run {splits.num_folds}; the teacher's folds must be this run's")
    model = folds[int(splits.fold) - 1]
    _check_same_test_fold(model, splits)
    return [model]


def _check_same_test_fold(model: Path, splits: DataSplits) -> None:
    run_dir = run_dir_of(model)
    predictions = RunLayout(run_dir).test_predictions if run_dir else None
    if predictions is None or not predictions.is_file():
        raise UserError(f"training.distillation.teacher: {model.parent} has no test "
                        f"predictions to show which sentences its fold held out")
    with predictions.open(encoding="utf-8", newline="") as stream:
        tested = {sentence_key(row["text"]) for row in csv.DictReader(stream)}
    ours = {sentence_key(text) for text in splits.test.texts}
    if tested != ours:
        raise UserError(
            f"training.distillation.teacher: fold {splits.fold} of the teacher "
            f"({model.parent}) was tested on other sentences than this fold "
            f"({len(ours - tested)} of {len(ours)} differ), so it may have trained on this "
            f"fold's test sentences. Distil from a teacher cross-validated on the same data "
            f"(data.path, filters, preprocessing), seed and data.cv_folds")


def _check_labels(models: list[Path], label_names: list[str]) -> None:
    for model in models:
        labels_file = model / "label_names.json"
        names = (json.loads(labels_file.read_text(encoding="utf-8"))
                 if labels_file.is_file() else None)
        if names != list(label_names):
            raise UserError(f"training.distillation.teacher: {model} predicts {names}, this "
                            f"run's data has {list(label_names)}; a teacher must name the same "
                            f"classes in the same order")


def unlabelled_sentences(files: list[str], splits: DataSplits, preprocessing: str,
                         split_articles: bool = False) -> tuple[list[str], dict]:
    """The files' sentences that are new to every split, and how many of each kind were dropped
    (see ``new_sentences``). With ``split_articles`` each text is split into its sentences
    first, and each sentence counts as read."""
    texts = (text for file in files for text in read_texts(file))
    if split_articles:
        texts = (sentence for text in texts for sentence in split_sentences(text))
    read = (preprocess_text(text, preprocessing) for text in texts)
    kept, counts = new_sentences(read, splits)
    if counts["in_evaluation_dropped"]:
        logger.warning("%d unlabelled sentence(s) are in the validation or test split and were "
                       "dropped", counts["in_evaluation_dropped"])
    return kept, counts


def new_sentences(texts: Iterable[str], splits: DataSplits, already_kept: Iterable[str] = ()
                  ) -> tuple[list[str], dict]:
    """``texts`` without those a teacher must not label for the student, with counts.

    Sentences of the validation or test split are dropped (a student must never be taught its
    evaluation sentences), and so are those already in training (they have gold labels) and
    repeats, of each other or of ``already_kept``.
    """
    held_out = {sentence_key(text) for split in (splits.validation, splits.test)
                for text in split.texts}
    training = {sentence_key(text) for text in splits.train.texts}
    earlier = {sentence_key(text) for text in already_kept}
    counts = {"read": 0, "in_evaluation_dropped": 0, "in_training_dropped": 0,
              "duplicates_dropped": 0, "added": 0}
    kept: dict[str, str] = {}
    for text in texts:
        counts["read"] += 1
        key = sentence_key(text)
        kind = ("in_evaluation_dropped" if key in held_out else
                "in_training_dropped" if key in training else
                "duplicates_dropped" if key in kept or key in earlier else None)
        if kind:
            counts[kind] += 1
        else:
            kept[key] = text
    counts["added"] = len(kept)
    return list(kept.values()), counts


def augmented_sentences(texts: Sequence[str], copies: int, rate: float,
                        rng: np.random.Generator) -> list[str]:
    """``copies`` perturbed versions of every text, for a teacher to label.

    Each word is changed with probability ``rate``: dropped, or replaced by a word drawn from
    all of ``texts`` (so by its frequency there), with equal chance. Every copy changes at
    least one word and keeps at least one. On sentences a teacher labels, such neighbours of
    the training data show the student where the teacher's decision changes, which the gold
    sentences alone do not (Tang et al., 2019, "Distilling task-specific knowledge from BERT
    into simple neural networks").

    >>> augmented_sentences(["the senator lied", "rain on monday"], 1, 0.3,
    ...                     np.random.default_rng(0))
    ['the rain rain', 'on monday']
    """
    sentences = [text.split() for text in texts]
    vocabulary = [word for words in sentences for word in words]
    copied = []
    for _ in range(copies):
        for words in sentences:
            if words:
                copied.append(" ".join(_perturbed(words, rate, vocabulary, rng)))
    return copied


def _perturbed(words: list[str], rate: float, vocabulary: list[str],
               rng: np.random.Generator) -> list[str]:
    changed = rng.random(len(words)) < rate
    if not changed.any():
        changed[rng.integers(len(words))] = True
    dropped = changed & (rng.random(len(words)) < 0.5)
    if dropped.all():  # keep a word: the one that would have been dropped first is replaced
        dropped[0] = False
    result = []
    for index, word in enumerate(words):
        if dropped[index]:
            continue
        result.append(vocabulary[rng.integers(len(vocabulary))] if changed[index] else word)
    return result


def _teacher_outputs(layout: RunLayout, models: list[Path], texts: list[str],
                     config: ExperimentConfig, world: World, precision: Precision,
                     stop: StopRequests | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits of every model on every text, ``(models, texts, classes)``, and with
    ``embedding_weight`` their sentence embeddings side by side, ``(texts, widths summed)``:
    read from the run's cache when it was computed for these models and texts, else computed
    once and cached."""
    key = {"models": [str(path.resolve()) for path in models],
           "texts_sha256": hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest(),
           "max_length": config.data.max_length}
    with_embeddings = config.training.distillation.embedding_weight > 0

    def read() -> tuple[np.ndarray | None, np.ndarray | None]:
        logits = _cached_logits(layout.teacher_logits, key)
        embeddings = _cached_embeddings(layout.teacher_embeddings, key) if with_embeddings else None
        return logits, embeddings

    if world.is_main:
        logits, embeddings = read()
        if logits is None or (with_embeddings and embeddings is None):
            with tqdm(total=len(models) * len(texts), desc="teacher", unit="sentence",
                      dynamic_ncols=True) as progress:
                outputs = [_model_outputs(model, texts, config, world.device, precision,
                                          progress, with_embeddings, stop) for model in models]
            atomic_write_text(layout.teacher_logits, json.dumps(
                {**key, "logits": [part.tolist() for part, _ in outputs]}) + "\n")
            if with_embeddings:
                with atomic_path(layout.teacher_embeddings) as temporary, \
                        temporary.open("wb") as stream:
                    np.savez(stream, key=json.dumps(key),
                             embeddings=np.concatenate([part for _, part in outputs], axis=1))
    world.barrier()  # the main process has written the cache
    logits, embeddings = read()
    if logits is None or (with_embeddings and embeddings is None):
        raise RuntimeError(f"{layout.root} does not hold the teacher outputs just written")
    return logits, embeddings


def _cached_logits(cache: Path, key: dict) -> np.ndarray | None:
    if not cache.is_file():
        return None
    stored = json.loads(cache.read_text(encoding="utf-8"))
    if any(stored.get(name) != value for name, value in key.items()):
        logger.info("%s was computed for other teacher models or sentences; computing anew",
                    cache)
        return None
    return np.asarray(stored["logits"], dtype=np.float32)


def _cached_embeddings(cache: Path, key: dict) -> np.ndarray | None:
    if not cache.is_file():
        return None
    with np.load(cache) as stored:
        if json.loads(str(stored["key"])) != key:
            logger.info("%s was computed for other teacher models or sentences; computing anew",
                        cache)
            return None
        return stored["embeddings"].astype(np.float32)


@torch.inference_mode()
def _model_outputs(model_dir: Path, texts: list[str], config: ExperimentConfig,
                   device: torch.device, precision: Precision, progress: tqdm,
                   with_embeddings: bool, stop: StopRequests | None = None
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """The model's logits on ``texts`` and, ``with_embeddings``, its sentence embeddings."""
    model, tokenizer = load_saved_model(model_dir)
    if with_embeddings and isinstance(model, BaseBiasClassifier):
        raise UserError(f"training.distillation.embedding_weight: the teacher {model_dir} is a "
                        f"registered model class without hidden states to match; teach with "
                        f"a transformers model or set embedding_weight to 0")
    model.to(device)
    dataset = TokenizedDataset(SplitData(texts, []), tokenizer, config.data.max_length)
    collate = make_collator(tokenizer)
    # Length-sorted batches pad least; the outputs are put back in the texts' order.
    order = np.argsort(np.asarray(dataset.lengths), kind="stable")
    batch_size = config.training.eval_batch_size
    logit_parts, embedding_parts = [], []
    for start in range(0, len(order), batch_size):
        if stop is not None and stop.signal_number is not None:
            raise TrainingInterrupted(stop.signal_number, 0, phase="the teacher's pass")
        batch = move_to(collate([dataset[int(row)] for row in order[start:start + batch_size]]),
                        device)
        with precision.autocast():
            output = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           output_hidden_states=with_embeddings)
            logit_parts.append(model_logits(output).float().cpu().numpy())
            if with_embeddings:
                embedding_parts.append(sentence_embedding(output, batch["attention_mask"])
                                       .float().cpu().numpy())
        progress.update(len(order[start:start + batch_size]))
    return (_in_text_order(logit_parts, order),
            _in_text_order(embedding_parts, order) if with_embeddings else None)


def _in_text_order(parts: list[np.ndarray], order: np.ndarray) -> np.ndarray:
    stacked = np.concatenate(parts)
    result = np.empty_like(stacked)
    result[order] = stacked
    return result


def _ensemble_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """The mean over models of each model's softmax at ``temperature``, ``(texts, classes)``."""
    scaled = logits / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    probabilities = np.exp(scaled)
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    return probabilities.mean(axis=0)
