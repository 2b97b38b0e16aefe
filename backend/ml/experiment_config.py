"""Public import path for configs and the experiment manager.

>>> from backend.ml.experiment_config import ExperimentConfig, ModelConfig
"""

from typing import TYPE_CHECKING

from .config import (
    CloudConfig,
    DataConfig,
    ExperimentConfig,
    LoggingConfig,
    ModelConfig,
    TrainingConfig,
)

if TYPE_CHECKING:
    from .experiments.manager import ExperimentManager
else:
    def __getattr__(name: str) -> object:
        # The manager reads run directories with pandas; import it only when asked for.
        if name == "ExperimentManager":
            from .experiments.manager import ExperimentManager
            return ExperimentManager
        raise AttributeError(name)


__all__ = ["CloudConfig", "DataConfig", "ExperimentConfig", "ExperimentManager", "LoggingConfig",
           "ModelConfig", "TrainingConfig"]
