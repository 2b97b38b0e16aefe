"""``retrain``: a new run from a previous run's config plus readers' labels and new labelled files.

The new run trains on the previous run's training and validation sentences (rebuilt from its
config and seed), the feedback that carries a text and any new BABE-format files. Every
sentence of the production run's held-out test split is kept out of that data, so both models
can then be compared honestly on exactly those sentences; the new run is registered as the
candidate with that comparison.

New rows (files and feedback) in a language the production model was not trained on are left
out and reported, unless ``include_languages`` names it, which needs a multilingual encoder:
an English model would otherwise learn German as noise without anyone being told.

The combined data is written as a BABE-format CSV (``text, label_bias, outlet, topic, type,
news_link, origin``, ";"-separated like BABE) under ``<registry>/training_data/`` and the new
run's config points ``data.path`` at it, so ``config.yaml`` alone reproduces the run.

>>> retrain("production", runs_dir=Path("experiments/runs"),
...         registry_dir=Path("experiments/registry"),
...         log_dir=Path("experiments/serving"))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..data.preprocessing import sentence_key
from ..errors import DataError, UserError
from ..fileio import atomic_write_json, atomic_write_text
from ..languages import (
    UNDETERMINED,
    detect_language,
    is_multilingual_encoder,
    read_training_languages,
    training_languages,
)
from ..registry import ModelRegistry, compare_with_production
from ..registry.commands import resolve_run_dir
from ..registry.comparison import production_test_set
from ..run_directory import RETRAINING, RunLayout
from .logs import read_feedback

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("text", "label_bias", "outlet", "topic", "type", "news_link", "origin")
RETRAIN_TAG = "retrain"


def _previous_rows(config) -> list[dict]:
    """The previous run's training and validation sentences, rebuilt from its config and seed."""
    from ..data.splits import prepare_splits

    try:
        splits = prepare_splits(config.data, config.seed)
    except DataError as error:
        raise UserError(f"cannot rebuild the previous run's training data: {error}") from None
    rows = []
    for origin, split in (("previous_train", splits.train),
                          ("previous_validation", splits.validation)):
        for text, label, metadata in zip(split.texts, split.labels, split.metadata):
            rows.append({"text": text, "label_bias": splits.label_names[label],
                         **{key: metadata.get(key, "") for key in ("outlet", "topic", "type",
                                                                    "news_link")},
                         "origin": origin})
    return rows


def _feedback_rows(feedback: list[dict], preprocessing: str) -> tuple[list[dict], int]:
    """(rows, skipped): the newest label per text; labels without a text cannot train."""
    from ..data.preprocessing import preprocess_text

    latest, skipped = {}, 0
    for record in feedback:
        text = (record.get("text") or "").strip()
        if not text:
            skipped += 1
            continue
        latest[preprocess_text(text, preprocessing)] = record["label"]
    return [{"text": text, "label_bias": label, "outlet": "", "topic": "", "type": "",
             "news_link": "", "origin": "feedback"} for text, label in latest.items()], skipped


def _file_rows(paths: list[Path], preprocessing: str) -> list[dict]:
    from ..data.loading import read_babe_file
    from ..data.preprocessing import preprocess_text

    rows = []
    for path in paths:
        frame = read_babe_file(Path(path))  # DataError names the file and rows on a bad file
        for record in frame.to_dict("records"):
            rows.append({"text": preprocess_text(record["text"], preprocessing),
                         "label_bias": record["label"],
                         **{key: record.get(key) or "" for key in ("outlet", "topic", "type",
                                                                    "news_link")},
                         "origin": f"file:{Path(path).name}"})
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, delimiter=";")  # as BABE's files
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _in_languages(rows: list[dict], languages: set[str]) -> tuple[list[dict], dict]:
    """(rows in ``languages`` or undetermined, rows left out per origin and language)."""
    kept: list[dict] = []
    left_out: dict[str, Counter[str]] = {}
    for row in rows:
        code = detect_language(row["text"]).code
        if code in languages or code == UNDETERMINED:
            kept.append(row)
        else:
            left_out.setdefault(row["origin"].split(":")[0], Counter())[code] += 1
    return kept, {origin: dict(counts.most_common()) for origin, counts in left_out.items()}


def build_training_rows(config, feedback: list[dict], new_files: list[Path],
                        held_out_texts: set[str], model_languages: list[str] | None = None,
                        include_languages: Sequence[str] = ()) -> tuple[list[dict], dict, dict]:
    """Previous data, then new files, then feedback (a later label of a text replaces earlier
    ones), minus the held-out test sentences and minus new rows in languages that are neither
    ``model_languages`` (None: those of the previous training data) nor ``include_languages``.

    Returns the rows, counts of where every row came from, and the languages report:
    ``{"model_languages", "included", "left_out": {origin: {language: rows}}}``.
    """
    preprocessing = config.data.preprocessing
    previous = _previous_rows(config)
    if model_languages is None:
        model_languages = training_languages(
            [row["text"] for row in previous if row["origin"] == "previous_train"])["languages"]
    feedback_rows, without_text = _feedback_rows(feedback, preprocessing)
    new_rows, left_out = _in_languages([*_file_rows(new_files, preprocessing), *feedback_rows],
                                       {*model_languages, *include_languages})
    # One sentence, however it was typed (quotes, case, spacing), is one row and is held out
    # whenever the test split holds it.
    by_key: dict[str, dict] = {}
    for row in [*previous, *new_rows]:
        key = sentence_key(row["text"])
        by_key.pop(key, None)  # keep the newest label, in its newest position
        by_key[key] = row
    held_out = {sentence_key(text) for text in held_out_texts}
    kept = [row for key, row in by_key.items() if key not in held_out]
    counts = {"feedback_without_text": without_text,
              "held_out_test_sentences_removed": len(by_key) - len(kept),
              "other_language_left_out": sum(sum(codes.values()) for codes in left_out.values())}
    for row in kept:
        origin = row["origin"].split(":")[0]
        counts[origin] = counts.get(origin, 0) + 1
    report = {"model_languages": sorted(model_languages),
              "included": sorted(include_languages), "left_out": left_out}
    return kept, counts, report


def _name_as_retrained(config, base: str, feedback_labels: int, new_files: int) -> None:
    """The retrained run's name, description and tags say where it came from."""
    name = config.experiment_name
    config.experiment_name = name if name.endswith(f"_{RETRAIN_TAG}") else f"{name}_{RETRAIN_TAG}"
    config.description = (f"{base} retrained with {feedback_labels} feedback label(s) and "
                          f"{new_files} new file(s)")
    config.tags = list(dict.fromkeys([*config.tags, RETRAIN_TAG]))


def describe_left_out(report: dict) -> str | None:
    """What a user reads about the rows left out for their language; None when none were."""
    per_language: Counter[str] = Counter()
    for codes in report["left_out"].values():
        per_language.update(codes)
    if not per_language:
        return None
    listing = ", ".join(f"{code} {count}" for code, count in per_language.most_common())
    return (f"Left out {sum(per_language.values())} new labelled row(s) in languages the "
            f"production model was not trained on ({listing}; it reads "
            f"{', '.join(report['model_languages']) or 'no recorded language'}). To learn from "
            f"them, retrain a multilingual model with --include-languages "
            f"{','.join(sorted(per_language))}.")


def _check_include_languages(config, include_languages: Sequence[str], base: str) -> None:
    if include_languages and not is_multilingual_encoder(config.model.model_name):
        raise UserError(
            f"--include-languages {','.join(include_languages)}: {base} fine-tunes "
            f"{config.model.model_name!r}, an encoder pretrained on English, which would learn "
            "these sentences as noise. Retrain from a run of a multilingual encoder (e.g. "
            "experiments/configs/xlmr_multilingual.yaml, model.model_name: xlm-roberta-base).")


def retrain(base: str, runs_dir: Path, registry_dir: Path, log_dir: Path,
            new_files: Sequence[Path] = (), feedback_file: Path | None = None,
            output_dir: Path | None = None, run_id: str | None = None, register: bool = True,
            metric: str = "f1_macro", alpha: float = 0.05,
            include_languages: Sequence[str] = ()) -> dict:
    """Train a new run from ``base``'s config plus feedback and ``new_files``; compare it with
    production on production's test split and register it as the candidate.

    Feedback and file rows in languages production was not trained on are left out (and
    reported) unless ``include_languages`` names them; that needs a multilingual encoder.

    Returns ``{"run_dir", "counts", "languages", "comparison"}``.
    """
    from ..config import load_yaml_config
    from ..run import run_experiment

    base_dir = resolve_run_dir(base, runs_dir, registry_dir)
    registry = ModelRegistry(registry_dir)
    production_dir = (registry.run_dir("production") if registry.stages().get("production")
                      else base_dir)
    config = load_yaml_config(RunLayout(base_dir).config)
    if config.data.cv_folds:
        raise UserError(f"{base_dir.name} is a cross-validation run; retrain from one fold's "
                        "run directory or from a single-split run")
    _check_include_languages(config, include_languages, base_dir.name)
    test_texts, _, _ = production_test_set(production_dir)
    feedback = read_feedback(feedback_file or log_dir)
    production_languages = read_training_languages(RunLayout(production_dir).final_model)
    rows, counts, languages = build_training_rows(
        config, feedback, list(new_files), set(test_texts),
        production_languages["languages"] if production_languages else None, include_languages)
    left_out = describe_left_out(languages)
    if left_out:
        logger.warning("%s", left_out)
    if not counts.get("feedback") and not new_files:
        logger.warning("no feedback with text and no new files: the new run learns nothing new")

    _name_as_retrained(config, base_dir.name, counts.get("feedback", 0), len(new_files))
    run_id = run_id or f"{config.experiment_name}_{uuid.uuid4().hex[:6]}"
    if (Path(output_dir or runs_dir) / run_id).exists():
        raise UserError(f"{Path(output_dir or runs_dir) / run_id} already exists; runs are never "
                        "overwritten: choose another --run-id")
    data_file = (Path(registry_dir) / "training_data" / f"{run_id}.csv").resolve()
    _write_csv(data_file, rows)
    config.data.dataset, config.data.path, config.data.max_samples = "babe", str(data_file), 0
    run_dir = run_experiment(config, output_dir or runs_dir, run_id=run_id, stage=RETRAINING)

    record = {"base_run": base_dir.name, "held_out_test_of": production_dir.name,
              "held_out_test_sentences": len(test_texts), "training_data": str(data_file),
              "new_files": [str(path) for path in new_files], "counts": counts,
              "languages": languages}
    atomic_write_json(RunLayout(run_dir).retrain_record, record)
    comparison = compare_with_production(run_dir, production_dir, metric, alpha)
    if register:
        registry.promote(run_dir, "candidate", comparison=comparison,
                         reason=f"retrained from {base_dir.name} on feedback")
    return {"run_dir": run_dir, "counts": counts, "languages": languages,
            "comparison": comparison}
