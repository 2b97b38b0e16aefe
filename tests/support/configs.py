"""The tiny offline experiment every training test starts from, and writing it as YAML."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

# A randomly initialised two-layer BERT on the shipped demo data: trains in seconds on a CPU.
TINY_CONFIG: dict[str, Any] = {
    "experiment_name": "tiny",
    "description": "tiny offline test run",
    "tags": ["test", "tiny"],
    "seed": 7,
    "model": {"architecture": "bert", "model_name": "tiny-bert", "pretrained": False,
              "num_labels": 3, "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 500,
              "dropout": 0.1},
    "training": {"batch_size": 16, "eval_batch_size": 32, "learning_rate": 1.0e-3, "epochs": 2,
                 "warmup_steps": 2, "device": "cpu"},
    "data": {"dataset": "demo", "max_samples": 150, "max_length": 64, "train_split": 0.6,
             "validation_split": 0.2},
    "logging": {"tensorboard": True, "wandb": False, "log_steps": 2, "save_steps": 4},
}


def tiny_config(**sections) -> dict:
    """TINY_CONFIG with sections updated, e.g. ``tiny_config(training={"epochs": 1})``."""
    config = copy.deepcopy(TINY_CONFIG)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


def write_config(directory: Path, config: dict, name: str = "config.yaml") -> Path:
    path = Path(directory) / name
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
