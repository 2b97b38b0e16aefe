"""Rules over a built ExperimentSchema: choices, bounds and cross-field consistency.

Every rule appends a message starting with the field's dotted path, so a user fixes the
whole config in one pass.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from .model_catalog import known_layer_count
from .schema import SEED_PLACEHOLDER, ExperimentSchema

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def did_you_mean(name: str, candidates) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or '' when none is close."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _number(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _check_field(path: str, value, metadata: Mapping, problems: list[str]) -> None:
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        listed = ", ".join(str(choice) for choice in choices)
        problems.append(f"{path}: must be one of {listed}, got {value!r}")
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    bounds = (("minimum", lambda v, b: v >= b, ">="), ("maximum", lambda v, b: v <= b, "<="),
              ("above", lambda v, b: v > b, ">"), ("below", lambda v, b: v < b, "<"))
    for key, holds, symbol in bounds:
        bound = metadata.get(key)
        if bound is not None and not holds(value, bound):
            problems.append(f"{path}: must be {symbol} {_number(bound)}, got {_number(value)}")


def _check_fields(section, prefix: str, problems: list[str]) -> None:
    for item in fields(section):
        value = getattr(section, item.name)
        path = f"{prefix}{item.name}"
        if is_dataclass(value):
            _check_fields(value, f"{path}.", problems)
        else:
            _check_field(path, value, item.metadata, problems)


def _check_model(config: ExperimentSchema, problems: list[str]) -> None:
    model = config.model
    expected_labels = 2 if config.data.filter_no_agreement else 3
    if model.num_labels in (2, 3) and model.num_labels != expected_labels:
        reason = ("data.filter_no_agreement is true, leaving Non-biased and Biased"
                  if config.data.filter_no_agreement else
                  "data.filter_no_agreement is false, keeping 'No agreement' as a third class")
        problems.append(f"model.num_labels: must be {expected_labels} because {reason}, "
                        f"got {model.num_labels}")
    if model.pretrained:
        layers = known_layer_count(model.model_name)
    else:
        layers = model.num_hidden_layers
        if model.hidden_size % max(model.num_attention_heads, 1):
            problems.append(f"model.num_attention_heads: must divide model.hidden_size "
                            f"({model.hidden_size}), got {model.num_attention_heads}")
    for name in ("freeze_layers", "reinit_layers"):
        if layers is not None and getattr(model, name) > layers:
            problems.append(f"model.{name}: must be <= {layers}, the number of encoder layers "
                            f"of {model.model_name if model.pretrained else 'this model'}, "
                            f"got {getattr(model, name)}")
    if not model.model_name.strip():
        problems.append("model.model_name: must name a hub id, a local directory or 'minilm'")


def _check_data(config: ExperimentSchema, problems: list[str]) -> None:
    data = config.data
    if data.train_split + data.validation_split >= 1.0:
        problems.append(f"data.validation_split: data.train_split + data.validation_split must be "
                        f"< 1 to leave a test split, got {data.train_split} + "
                        f"{data.validation_split}")
    if data.cv_folds == 1:
        problems.append("data.cv_folds: must be 0 (no cross-validation) or at least 2, got 1")
    named_files = [("data.validation_path", data.validation_path),
                   ("data.test_path", data.test_path)]
    if data.dataset == "babe":
        named_files.insert(0, ("data.path", data.path))
    for name, value in named_files:
        if not value:
            continue
        path = Path(value).expanduser()
        looks_local = (value.startswith((".", "/", "~")) or path.suffix.lower() in
                       (".csv", ".xlsx", ".xls", ".tsv"))
        if looks_local and not path.exists():
            problems.append(f"{name}: {value} does not exist; point it at a BABE "
                            f"final_labels_*.csv/.xlsx file or the directory holding them")
    if data.cv_folds and (data.validation_path or data.test_path):
        problems.append("data.cv_folds: cross-validation draws its own validation and test "
                        "splits; leave data.validation_path and data.test_path empty")


def _check_training(config: ExperimentSchema, problems: list[str]) -> None:
    training = config.training
    if training.device == "cpu" and training.mixed_precision == "fp16":
        problems.append("training.mixed_precision: fp16 needs a GPU (fp16 autocast runs on CUDA); "
                        "with training.device: cpu use bf16, auto or no")


PRETRAINING_SUFFIXES = (".txt", ".csv", ".xlsx")
UNLABELLED_SUFFIXES = (".txt", ".csv", ".xlsx", ".jsonl")


def _check_distillation(config: ExperimentSchema, problems: list[str]) -> None:
    distillation = config.training.distillation
    for reference in distillation.teacher_list():
        if set("{}") & set(reference.replace(SEED_PLACEHOLDER, "")):
            problems.append(f"training.distillation.teacher: {reference} has a placeholder "
                            f"other than {SEED_PLACEHOLDER}, the only one replaced (by the run's "
                            f"seed)")
    if isinstance(distillation.teacher, list):
        for index, reference in enumerate(distillation.teacher):
            if not reference:
                problems.append(f"training.distillation.teacher[{index}]: is empty; name a run, "
                                f"a run directory or a registry stage")
            elif distillation.teacher.index(reference) < index:
                problems.append(f"training.distillation.teacher[{index}]: {reference} is listed "
                                f"twice; each teacher counts once in the ensemble")
    if distillation.unlabelled_files and not distillation.teacher:
        problems.append("training.distillation.unlabelled_files: only a teacher can label them; "
                        "set training.distillation.teacher or remove the files")
    if distillation.split_articles and not distillation.unlabelled_files:
        problems.append("training.distillation.split_articles: there are no unlabelled files to "
                        "split; set training.distillation.unlabelled_files or remove it")
    if distillation.embedding_weight and not distillation.teacher:
        problems.append("training.distillation.embedding_weight: only a teacher has embeddings "
                        "to match; set training.distillation.teacher or set it to 0")
    if distillation.augmented_copies and not distillation.teacher:
        problems.append("training.distillation.augmented_copies: only a teacher can label the "
                        "copies; set training.distillation.teacher or set it to 0")
    for index, value in enumerate(distillation.unlabelled_files):
        where = f"training.distillation.unlabelled_files[{index}]"
        path = Path(value).expanduser()
        if path.suffix.lower() not in UNLABELLED_SUFFIXES:
            problems.append(f"{where}: {value} must be a .txt (one sentence per line), .csv or "
                            f".xlsx (a 'text' column) or .jsonl file (objects with 'text')")
        elif not path.is_file():
            problems.append(f"{where}: {value} does not exist; check the path (relative paths "
                            f"start from the directory you run in)")


def _check_pretraining(config: ExperimentSchema, problems: list[str]) -> None:
    pretraining = config.pretraining
    for name in ("text_files", "exclude_files"):
        for index, value in enumerate(getattr(pretraining, name)):
            where = f"pretraining.{name}[{index}]"
            path = Path(value).expanduser()
            if path.suffix.lower() not in PRETRAINING_SUFFIXES:
                problems.append(f"{where}: {value} must be a .txt (one sentence per line), .csv "
                                f"or .xlsx file (with a 'text' column)")
            elif not path.is_file():
                problems.append(f"{where}: {value} does not exist; check the path (relative "
                                f"paths start from the directory you run in)")
    if not pretraining.use_configured_data and not pretraining.text_files:
        problems.append("pretraining.text_files: is empty and pretraining.use_configured_data is "
                        "false, which leaves nothing to pre-train on; list a file or set "
                        "use_configured_data: true")


def _sweepable(config: ExperimentSchema, dotted: str) -> bool:
    """Whether a dotted path names a field holding a value (not a whole section)."""
    target: Any = config
    *sections, name = dotted.split(".")
    for section in sections:
        target = getattr(target, section, None)
        if target is None or not is_dataclass(target):
            return False
    if name not in getattr(target, "__dataclass_fields__", {}):
        return False
    return not is_dataclass(getattr(target, name))


def _field_metadata(config: ExperimentSchema, dotted: str) -> tuple[Any, Mapping]:
    """(current value, metadata) of the field a dotted path names (a _sweepable one)."""
    target: Any = config
    *sections, name = dotted.split(".")
    for section in sections:
        target = getattr(target, section)
    return getattr(target, name), target.__dataclass_fields__[name].metadata


def _searchable_paths(config: ExperimentSchema, target: Any = None, prefix: str = "") -> list[str]:
    target = config if target is None else target
    paths = []
    for item in fields(target):
        value = getattr(target, item.name)
        if is_dataclass(value):
            paths += _searchable_paths(config, value, f"{prefix}{item.name}.")
        elif item.name not in ("sweep", "experiment_name") and not prefix.startswith("search."):
            paths.append(f"{prefix}{item.name}")
    return paths


_DISTRIBUTION_KEYS = {"low", "high", "log", "step", "choices"}


def _check_distribution(config: ExperimentSchema, dotted: str, spec: Any,
                        problems: list[str]) -> None:
    where = f"search.space.{dotted}"
    if not isinstance(spec, Mapping):
        problems.append(f"{where}: must be {{low, high}} (with log or step) or {{choices: [...]}}, "
                        f"got {spec!r}")
        return
    unknown = sorted(set(spec) - _DISTRIBUTION_KEYS)
    if unknown:
        problems.append(f"{where}.{unknown[0]}: unknown key; use low, high, log, step or choices")
        return
    current, metadata = _field_metadata(config, dotted)
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"}:
            problems.append(f"{where}: give either choices or low/high, not both")
        elif not isinstance(choices, list) or not choices:
            problems.append(f"{where}.choices: must be a non-empty list, got {choices!r}")
        else:
            for index, choice in enumerate(choices):
                _check_field(f"{where}.choices[{index}]", choice, metadata, problems)
        return
    if "low" not in spec or "high" not in spec:
        problems.append(f"{where}: a range needs both low and high (or give choices: [...])")
        return
    low, high = spec["low"], spec["high"]
    numbers = all(isinstance(value, (int, float)) and not isinstance(value, bool)
                  for value in (low, high))
    numeric_field = isinstance(current, (int, float, type(None))) and \
        not isinstance(current, bool)
    if not numbers or not numeric_field:
        problems.append(f"{where}: low and high must be numbers for a numeric field; for "
                        f"{dotted} give choices: [...]")
        return
    if not low < high:
        problems.append(f"{where}: low must be below high, got {low} and {high}")
    if spec.get("log") and spec.get("step") is not None:
        problems.append(f"{where}: log and step cannot go together (Optuna samples a log range "
                        f"without steps)")
    if spec.get("log") and low <= 0:
        problems.append(f"{where}.low: must be > 0 on a log scale, got {low}")
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float))
                             or step <= 0):
        problems.append(f"{where}.step: must be a number > 0, got {step!r}")
    if isinstance(current, int) and not all(isinstance(value, int) for value in (low, high)):
        problems.append(f"{where}: {dotted} is a whole number; low and high must be too")
    for key, value in (("low", low), ("high", high)):
        _check_field(f"{where}.{key}", value, metadata, problems)


def _check_search(config: ExperimentSchema, problems: list[str]) -> None:
    search = config.search
    for dotted, spec in search.space.items():
        if dotted in ("sweep", "experiment_name") or dotted.startswith("search.") \
                or not _sweepable(config, dotted):
            problems.append(f"search.space.{dotted}: not a config field that can be searched"
                            f"{did_you_mean(dotted, _searchable_paths(config))}; use a dotted "
                            f"path such as training.learning_rate")
            continue
        _check_distribution(config, dotted, spec, problems)
    if search.sampler == "grid" and any(not isinstance(spec, Mapping) or "choices" not in spec
                                        for spec in search.space.values()):
        problems.append("search.sampler: grid searches every combination of choices; give each "
                        "search.space entry as {choices: [...]} or use tpe or random")
    if search.space and config.sweep:
        problems.append("sweep: tune searches search.space; remove the sweep section (a grid "
                        "search is search.sampler: grid)")


def _check_sweep(config: ExperimentSchema, problems: list[str]) -> None:
    for dotted, values in config.sweep.items():
        if dotted in ("sweep", "experiment_name") or not _sweepable(config, dotted):
            problems.append(f"sweep.{dotted}: not a config field that can be swept; use a dotted "
                            f"path such as training.learning_rate")
        elif not isinstance(values, list) or not values:
            problems.append(f"sweep.{dotted}: must be a non-empty list of values, got {values!r}")


def validate_config(config: ExperimentSchema) -> list[str]:
    """All problems with ``config`` as readable messages; an empty list means valid."""
    problems: list[str] = []
    if not _NAME_PATTERN.match(config.experiment_name or ""):
        problems.append(f"experiment_name: use letters, digits, '-', '_' and '.', starting with a "
                        f"letter or digit, got {config.experiment_name!r}")
    _check_fields(config, "", problems)
    _check_model(config, problems)
    _check_data(config, problems)
    _check_training(config, problems)
    _check_distillation(config, problems)
    _check_pretraining(config, problems)
    _check_sweep(config, problems)
    _check_search(config, problems)
    return problems
