"""Experiment configuration: dataclass sections, YAML loading, validation and sweeps.

Imports inside the package run one way: ``schema`` (plain dataclasses) and ``model_catalog`` at
the bottom, ``validation`` above them, ``loading`` (which defines :class:`ExperimentConfig` with
its convenience methods) above that, and ``sweep`` on top.
"""

from .loading import (
    ExperimentConfig,
    apply_overrides,
    config_to_yaml,
    did_you_mean,
    load_yaml_config,
)
from .schema import (
                     SEED_PLACEHOLDER,
                     CloudConfig,
                     DataConfig,
                     DistillationConfig,
                     LoggingConfig,
                     ModelConfig,
                     PretrainingConfig,
                     SearchConfig,
                     TrainingConfig,
)
from .sweep import expand_sweep

__all__ = ["SEED_PLACEHOLDER", "CloudConfig", "DataConfig", "DistillationConfig",
           "ExperimentConfig", "LoggingConfig", "ModelConfig", "PretrainingConfig", "SearchConfig",
           "TrainingConfig",
           "apply_overrides", "config_to_yaml", "did_you_mean", "expand_sweep", "load_yaml_config"]
