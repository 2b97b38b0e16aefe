"""The model registry: production and candidate stages over run directories, with history.

Reads run directories only (like ``experiments`` and ``inference``); the CLI's ``promote`` and
``registry`` subcommands live in :mod:`backend.ml.registry.commands`.
"""

from .comparison import (
           compare_with_production,
           describe_comparison,
           production_test_set,
)
from .store import DEFAULT_REGISTRY_DIR, STAGES, ModelRegistry, RegistryError

__all__ = ["DEFAULT_REGISTRY_DIR", "STAGES", "ModelRegistry", "RegistryError",
           "compare_with_production", "describe_comparison", "production_test_set"]
