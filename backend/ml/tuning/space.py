"""From a validated ``search:`` section to Optuna's parts: suggested values, sampler, pruner,
and the config a trial trains.

>>> params = suggest(trial, {"training.learning_rate": {"low": 1e-5, "high": 1e-4,
...                                                     "log": True}})  # doctest: +SKIP
>>> trial_config = with_params(config, params, "study_trial-003")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from typing import Any

from ..config import ExperimentConfig, SearchConfig

# The validation metrics a search can optimise are the early-stopping ones.
LOWER_IS_BETTER = {"loss"}


def search_metric(config: ExperimentConfig) -> str:
    """The validation metric a study optimises: search.metric, else the early-stopping one."""
    return config.search.metric or config.training.early_stopping_metric


def search_direction(config: ExperimentConfig) -> str:
    """``maximize`` or ``minimize``, resolving ``auto`` from the metric."""
    direction = config.search.direction
    if direction != "auto":
        return direction
    return "minimize" if search_metric(config) in LOWER_IS_BETTER else "maximize"


def suggest(trial, space: dict[str, dict]) -> dict[str, Any]:
    """One value per dotted field, drawn through ``trial`` (an ``optuna.Trial``)."""
    params: dict[str, Any] = {}
    for dotted, spec in space.items():
        if "choices" in spec:
            params[dotted] = trial.suggest_categorical(dotted, spec["choices"])
        elif all(isinstance(spec[key], int) for key in ("low", "high")) and \
                isinstance(spec.get("step", 1), int):
            params[dotted] = trial.suggest_int(dotted, spec["low"], spec["high"],
                                               step=spec.get("step") or 1,
                                               log=bool(spec.get("log")))
        else:
            params[dotted] = trial.suggest_float(dotted, float(spec["low"]), float(spec["high"]),
                                                 step=spec.get("step"), log=bool(spec.get("log")))
    return params


def with_params(config: ExperimentConfig, params: dict[str, Any], experiment_name: str,
                tags: list[str] | None = None, seed: int | None = None) -> ExperimentConfig:
    """``config`` with each dotted field set, its search section kept, renamed and tagged."""
    data = copy.deepcopy(config.to_dict())
    for dotted, value in params.items():
        target = data
        *sections, name = dotted.split(".")
        for section in sections:
            target = target[section]
        target[name] = value
    data["experiment_name"] = experiment_name
    data["tags"] = list(dict.fromkeys([*data["tags"], *(tags or [])]))
    if seed is not None:
        data["seed"] = seed
    return ExperimentConfig.from_dict(data, f"{experiment_name} (search point)")


def build_sampler(search: SearchConfig, seed: int):
    """TPE, random or grid over ``search.space``, seeded."""
    import optuna

    if search.sampler == "grid":
        grid = {dotted: spec["choices"] for dotted, spec in search.space.items()}
        return optuna.samplers.GridSampler(grid, seed=seed)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # TPE samples at random until it has n_startup_trials results; Optuna's default of 10 would
    # make a study of 8 trials a random search.
    startup = max(2, min(10, search.trials // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def build_pruner(search: SearchConfig):
    """The pruner named by ``search.pruner``; steps are evaluation counts (1, 2, ...)."""
    import optuna

    if search.pruner == "median":
        # Never prune on the first evaluation, nor before two trials have finished.
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()
