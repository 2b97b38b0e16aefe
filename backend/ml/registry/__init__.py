"""The model registry: production and candidate stages over run directories, with history.

The stages file itself is :mod:`backend.ml.model_registry`'s (inference reads a stage through
it); this package adds the comparison on production's test split and the CLI's ``promote`` and
``registry`` subcommands (:mod:`backend.ml.registry.commands`).
"""

from ..lazy_exports import lazy_exports

__all__ = ["DEFAULT_REGISTRY_DIR", "STAGES", "ModelRegistry", "RegistryError",
           "compare_with_production", "describe_comparison", "production_test_set"]
# Imported on first use: the comparison needs numpy and the statistics, the CLI's parser only
# DEFAULT_REGISTRY_DIR.
__getattr__, __dir__ = lazy_exports(__name__, {
    "compare_with_production": ".comparison", "describe_comparison": ".comparison",
    "production_test_set": ".comparison", "DEFAULT_REGISTRY_DIR": "..model_registry",
    "STAGES": "..model_registry", "ModelRegistry": "..model_registry",
    "RegistryError": "..model_registry"})
