"""Grid sweeps: ``sweep: {training.learning_rate: [1e-5, 3e-5], model.dropout: [0.1, 0.2]}``
expands into one named config per combination."""

from __future__ import annotations

import copy
import itertools
import re

from ..errors import ConfigError
from .loading import ExperimentConfig

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _label(dotted: str, value) -> str:
    return _UNSAFE.sub("-", f"{dotted.split('.')[-1]}={value}")


def expand_sweep(config: ExperimentConfig) -> list[ExperimentConfig]:
    """One config per grid point, named ``<name>__field-value__...``; [config] without a sweep.

    >>> base = ExperimentConfig(experiment_name="lr", sweep={"training.epochs": [1, 2]})
    >>> [c.experiment_name for c in expand_sweep(base)]
    ['lr__epochs-1', 'lr__epochs-2']
    """
    if not config.sweep:
        return [config]
    keys = list(config.sweep)
    expanded = []
    for combination in itertools.product(*(config.sweep[key] for key in keys)):
        data = copy.deepcopy(config.to_dict())
        data["sweep"] = {}
        for dotted, value in zip(keys, combination):
            target = data
            *sections, name = dotted.split(".")
            for section in sections:
                target = target[section]
            target[name] = value
        labels = "__".join(_label(key, value) for key, value in zip(keys, combination))
        data["experiment_name"] = f"{config.experiment_name}__{labels}"
        try:
            expanded.append(ExperimentConfig.from_dict(data, f"sweep point {labels}"))
        except ConfigError as error:
            raise ConfigError(f"sweep of {config.experiment_name}", error.problems) from None
    return expanded
