"""Experiment configuration: dataclass sections, YAML loading, validation and sweeps."""

from .loading import apply_overrides, config_to_yaml, did_you_mean, load_yaml_config
from .schema import (
                     CloudConfig,
                     DataConfig,
                     ExperimentConfig,
                     LoggingConfig,
                     ModelConfig,
                     PretrainingConfig,
                     TrainingConfig,
)
from .sweep import expand_sweep

__all__ = ["CloudConfig", "DataConfig", "ExperimentConfig", "LoggingConfig", "ModelConfig",
           "PretrainingConfig", "TrainingConfig", "apply_overrides", "config_to_yaml",
           "did_you_mean", "expand_sweep", "load_yaml_config"]
