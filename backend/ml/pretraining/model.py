"""The masked language model a pre-training run trains, and the encoder directory it writes.

A pretrained checkpoint loads through ``AutoModelForMaskedLM``; one saved without its MLM head
(the packaged MiniLM is a sentence-transformers encoder) gets a freshly initialised head, which
is reported. With ``model.pretrained: false`` a random encoder of the configured family and
sizes is built with a tokenizer trained on the pre-training sentences.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ..config.schema import ModelConfig
from ..errors import UserError
from ..models.families import FAMILIES, apply_dropout, random_config
from ..models.sources import (
    load_config,
    load_tokenizer,
    quiet_transformers,
    resolve_source,
)
from ..models.tokenizer_training import train_tokenizer

logger = logging.getLogger(__name__)

ENCODER_DIR = "encoder"


@dataclass
class MaskedLanguageModel:
    """A model with an MLM head, its tokenizer, and what loading it had to make up."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str | None
    """Where the weights came from; None for a randomly initialised model."""
    new_weights: list[str] = field(default_factory=list)
    """Weights not in the checkpoint, initialised at random (usually the MLM head)."""
    kept_from_checkpoint: dict[str, torch.Tensor] = field(default_factory=dict)
    """Checkpoint tensors the MLM model does not use (BERT's pooler), saved back unchanged so
    that a classifier fine-tuned from the encoder starts from them, as it would from the
    original checkpoint."""


def _random_masked_lm(model_config: ModelConfig, texts: list[str]) -> MaskedLanguageModel:
    family = (model_config.architecture if model_config.architecture in FAMILIES
              else model_config.encoder_architecture)
    tokenizer = train_tokenizer(family, texts, model_config.vocab_size)
    special_ids = {"pad": tokenizer.pad_token_id, "bos": tokenizer.bos_token_id,
                   "eos": tokenizer.eos_token_id}
    config = random_config(family, model_config, len(tokenizer), special_ids)
    with quiet_transformers():
        model = AutoModelForMaskedLM.from_config(config)
    return MaskedLanguageModel(model, tokenizer, None)


def _unused_checkpoint_tensors(source, prefix: str, unexpected: set[str]) -> dict:
    if not any("pooler" in key for key in unexpected):
        return {}
    with quiet_transformers():
        encoder, loading = AutoModel.from_pretrained(source.location, output_loading_info=True,
                                                     local_files_only=source.local_only)
    missing = set(loading.get("missing_keys") or ())
    return {f"{prefix}.{name}": tensor.detach().clone()
            for name, tensor in encoder.state_dict().items()
            if name.startswith("pooler.") and name not in missing}


def build_masked_lm(model_config: ModelConfig, texts: list[str]) -> MaskedLanguageModel:
    """The configured encoder with an MLM head (``texts`` train the tokenizer of a random one).

    >>> built = build_masked_lm(ModelConfig(model_name="minilm"), [])  # doctest: +SKIP
    >>> built.new_weights[:1]  # doctest: +SKIP
    ['cls.predictions.bias']
    """
    if not model_config.pretrained:
        return _random_masked_lm(model_config, texts)
    source = resolve_source(model_config.model_name)
    checkpoint_config = load_config(source)
    apply_dropout(checkpoint_config, model_config.dropout)
    try:
        with quiet_transformers():
            model, loading = AutoModelForMaskedLM.from_pretrained(
                source.location, config=checkpoint_config, local_files_only=source.local_only,
                output_loading_info=True)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise UserError(f"model.model_name: {model_config.model_name!r} does not load as a "
                        f"masked language model ({first_line}); pre-training needs an encoder "
                        f"such as BERT, RoBERTa, DistilBERT or ELECTRA") from None
    new_weights = sorted(loading.get("missing_keys") or ())
    if new_weights:
        logger.warning("%s has no weights for %s: they start random (the MLM head of an encoder "
                       "saved without one) and are learned by pre-training", source.location,
                       ", ".join(new_weights))
    kept = _unused_checkpoint_tensors(source, model.base_model_prefix,
                                      set(loading.get("unexpected_keys") or ()))
    return MaskedLanguageModel(model, load_tokenizer(source), source.location, new_weights, kept)


def write_masked_lm(built: MaskedLanguageModel, directory: Path) -> None:
    """Weights (with the checkpoint tensors the MLM model does not use), config and tokenizer
    into ``directory`` (a checkpoint's ``model/``, or the encoder's staging directory)."""
    state = {**built.model.state_dict(), **built.kept_from_checkpoint}
    with quiet_transformers():
        built.model.save_pretrained(directory, state_dict=state)
        built.tokenizer.save_pretrained(directory)


def load_masked_lm(directory: Path, source: str | None,
                   new_weights: list[str]) -> MaskedLanguageModel:
    """A model written by :func:`write_masked_lm` (a step checkpoint's ``model/``), with the
    ``source`` and ``new_weights`` its run recorded; the unused checkpoint tensors come back
    from its weights file.

    >>> built = load_masked_lm(checkpoint / "model", None, [])  # doctest: +SKIP
    """
    from safetensors.torch import load_file

    with quiet_transformers():
        model = AutoModelForMaskedLM.from_pretrained(directory, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    used = set(model.state_dict())
    saved = load_file(Path(directory) / "model.safetensors")
    kept = {name: tensor for name, tensor in saved.items() if name not in used}
    return MaskedLanguageModel(model, tokenizer, source, list(new_weights), kept)


def save_encoder(built: MaskedLanguageModel, run_dir: Path) -> Path:
    """Write ``run_dir/encoder/`` (weights, config, tokenizer) in one rename: whole or absent.

    A fine-tuning config starts from it with ``model.model_name: <run_dir>/encoder``.
    """
    target = Path(run_dir) / ENCODER_DIR
    staging = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{ENCODER_DIR}.tmp-"))
    staging.chmod(0o755)  # mkdtemp makes it private to the user; a model directory is not
    try:
        write_masked_lm(built, staging)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
