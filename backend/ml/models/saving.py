"""Saving a trained model with its tokenizer and labels, and loading it back.

Transformers models (bert, distilbert, roberta, electra) are saved as plain checkpoints that
``AutoModelForSequenceClassification.from_pretrained`` reads; the custom head also ships its
code (``trust_remote_code=True`` outside this project). Registered ``BaseBiasClassifier``
models are saved as ``model.safetensors`` + ``registered_model.json`` and rebuilt through the
registry. Every directory also holds the tokenizer and ``label_names.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, fields
from pathlib import Path

from safetensors.torch import load_model as load_safetensors
from safetensors.torch import save_model as save_safetensors
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ..config.schema import ModelConfig
from ..errors import UserError
from ..fileio import storage_errors_explained, write_failure
from .base import BaseBiasClassifier
from .bias_head import BiasHeadConfig, BiasHeadModel
from .factory import ModelFactory
from .sources import PLAIN_LAYERS, quiet_transformers

LABELS_FILE = "label_names.json"
REGISTERED_FILE = "registered_model.json"
WEIGHTS_FILE = "model.safetensors"


def save_model(model: nn.Module, tokenizer, directory: str | os.PathLike,
               label_names: list[str]) -> None:
    """Write ``model``, ``tokenizer`` and ``label_names`` to ``directory``, replacing it whole.

    Everything is written to a temporary sibling first and renamed into place, so a crash
    never leaves a half-written model directory; a full or read-only disk raises StorageError.

    >>> save_model(model, tokenizer, run_dir / "final_model", label_names)  # doctest: +SKIP
    """
    target = Path(directory)
    label_names = [str(name) for name in label_names]
    with storage_errors_explained(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    staging.chmod(0o755)  # mkdtemp makes it private to the user; a model directory is not
    try:
        if isinstance(model, BaseBiasClassifier):
            _save_registered(model, staging)
        elif isinstance(model, PreTrainedModel):
            _save_transformers(model, staging, label_names)
        else:
            raise TypeError(f"cannot save {type(model).__name__}: expected a transformers "
                            f"PreTrainedModel or a BaseBiasClassifier")
        with quiet_transformers():
            tokenizer.save_pretrained(staging)
        (staging / LABELS_FILE).write_text(json.dumps(label_names, ensure_ascii=False, indent=2)
                                           + "\n", encoding="utf-8")
        _move_into_place(staging, target)
    except Exception as error:
        explained = write_failure(target, error)  # a full disk: say so, not a library error
        if explained is None:
            raise
        raise explained from error
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _save_transformers(model: PreTrainedModel, directory: Path, label_names: list[str]) -> None:
    if model.config.num_labels != len(label_names):
        raise ValueError(f"the model has {model.config.num_labels} outputs but "
                         f"{len(label_names)} label names were given: {label_names}")
    # Readable labels in config.json, e.g. {"0": "Non-biased", "1": "Biased"}.
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {name: index for index, name in enumerate(label_names)}
    with quiet_transformers():
        model.save_pretrained(directory)


def _save_registered(model: BaseBiasClassifier, directory: Path) -> None:
    name = ModelFactory.registered_name(type(model))
    if name is None:
        raise ValueError(f"{type(model).__name__} is not registered; register it with "
                         f"ModelFactory.register_model(name, {type(model).__name__}) so that "
                         f"load_saved_model can rebuild it")
    save_safetensors(model, str(directory / WEIGHTS_FILE))
    description = {"format_version": 1, "architecture": name,
                   "class": f"{type(model).__module__}.{type(model).__qualname__}",
                   "model_config": asdict(model.config)}
    (directory / REGISTERED_FILE).write_text(json.dumps(description, indent=2) + "\n",
                                             encoding="utf-8")


def _move_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        os.replace(staging, target)
        return
    # A directory cannot be replaced in one rename: move the old one aside first.
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
    os.replace(target, old / target.name)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(old / target.name, target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def load_saved_model(directory: str | os.PathLike
                     ) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """Load a directory written by :func:`save_model`: ``(model in eval mode, tokenizer)``.

    >>> model, tokenizer = load_saved_model(run_dir / "final_model")  # doctest: +SKIP
    """
    path = Path(directory)
    if not path.is_dir():
        raise UserError(f"{path}: no saved model there (expected a directory written by "
                        f"save_model, e.g. a run's final_model/)")
    model: nn.Module
    if (path / REGISTERED_FILE).is_file():
        model = _load_registered(path)
    elif (path / "config.json").is_file():
        model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get(
            "model_type")
        # The custom head loads with the class from this package: no code from the directory runs.
        model_class = (BiasHeadModel if model_type == BiasHeadConfig.model_type
                       else AutoModelForSequenceClassification)
        with quiet_transformers():
            model = model_class.from_pretrained(path, local_files_only=True, **PLAIN_LAYERS)
    else:
        raise UserError(f"{path}: neither config.json nor {REGISTERED_FILE} found; is this a "
                        f"model directory written by save_model?")
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model.eval()
    return model, tokenizer


def _load_registered(path: Path) -> BaseBiasClassifier:
    description = json.loads((path / REGISTERED_FILE).read_text(encoding="utf-8"))
    name = description["architecture"]
    if name not in ModelFactory.available_models():
        # The module that defines the class registers it when imported.
        module = description.get("class", "").rpartition(".")[0]
        if module and module != "__main__":
            try:
                importlib.import_module(module)
            except ImportError:
                pass
    if name not in ModelFactory.available_models():
        raise UserError(f"{path} holds a {name!r} model ({description.get('class')}); import "
                        f"the module that registers it with ModelFactory.register_model "
                        f"before loading")
    model_class = ModelFactory.lookup(name)
    if not isinstance(model_class, type):
        raise UserError(f"{path}: {name!r} is a built-in architecture, not a registered class")
    known = {item.name for item in fields(ModelConfig)}
    config = ModelConfig(**{key: value for key, value in description["model_config"].items()
                            if key in known})
    model = model_class(config)
    load_safetensors(model, str(path / WEIGHTS_FILE))
    return model
