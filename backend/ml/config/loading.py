"""YAML and dict ⇄ ExperimentConfig, with every structural problem reported at once.

:class:`ExperimentConfig` is the schema's experiment plus the convenience methods users call
(``from_yaml``, ``from_dict``, ``save_yaml``, ``validate``); it lives here, above the schema
and the validation rules, so that neither of them imports upwards.
"""

from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..fileio import atomic_write_text
from .schema import ExperimentSchema
from .validation import did_you_mean, validate_config

_FLOAT_LITERAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class ExperimentConfig(ExperimentSchema):
    """A whole experiment: one YAML file.

    >>> from backend.ml.config import ModelConfig
    >>> config = ExperimentConfig(experiment_name="roberta_v1")
    >>> config.model = ModelConfig(architecture="roberta", model_name="roberta-base")
    >>> config.validate()
    []
    """

    @classmethod
    def from_dict(cls, data: dict, source: str = "<config>", validate: bool = True
                  ) -> ExperimentConfig:
        """Build a config from plain data; raises ConfigError listing every problem at once."""
        return config_from_dict(data, source, validate=validate)

    @classmethod
    def from_yaml(cls, path: str | Path, validate: bool = True) -> ExperimentConfig:
        """Read a YAML config file; raises ConfigError listing every problem at once.

        >>> config = ExperimentConfig.from_yaml("experiments/configs/quickstart.yaml")
        """
        return load_yaml_config(path, validate=validate)

    def save_yaml(self, path: str | Path) -> None:
        """Write the config as YAML, atomically."""
        save_yaml_config(self, path)

    def validate(self) -> list[str]:
        """Every problem with the config as readable text with its dotted path; empty when valid.

        >>> from backend.ml.config import TrainingConfig
        >>> ExperimentConfig(training=TrainingConfig(learning_rate=-1)).validate()
        ['training.learning_rate: must be > 0, got -1']
        """
        return validate_config(self)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if origin is not None:
        return origin.__name__
    return "null" if annotation is type(None) else annotation.__name__


def _coerce_float(value: Any, path: str, problems: list[str]) -> Any:
    if isinstance(value, bool):
        problems.append(f"{path}: must be a number, got {value!r}")
        return value
    # YAML 1.1 reads "2e-5" (no dot) as a string; accept what the user plainly meant.
    if isinstance(value, str) and _FLOAT_LITERAL.match(value.strip()):
        value = float(value)
    if not isinstance(value, (int, float)):
        problems.append(f"{path}: must be a number, got {value!r}")
        return value
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    if not math.isfinite(number):
        problems.append(f"{path}: must be a finite number, got {value!r}")
    return number


def _coerce(value: Any, annotation: Any, path: str, problems: list[str]) -> Any:
    """Check ``value`` against the field type; returns the (possibly converted) value."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        arguments = typing.get_args(annotation)
        if value is None and type(None) in arguments:
            return None
        concrete = [arg for arg in arguments if arg is not type(None)]
        # A list goes to the list type of ``str | list[str]``, anything else to the other one.
        shaped = [arg for arg in concrete
                  if (typing.get_origin(arg) is list) == isinstance(value, list)]
        return _coerce(value, (shaped or concrete)[0], path, problems)
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{path}: must be a list, got {value!r}")
            return []
        (item_type,) = typing.get_args(annotation) or (Any,)
        if item_type is Any:
            return list(value)
        return [_coerce(item, item_type, f"{path}[{index}]", problems)
                for index, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{path}: must be a mapping, got {value!r}")
            return {}
        for key in value:
            if not isinstance(key, str):
                problems.append(f"{path}: keys must be text, got {key!r}")
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            problems.append(f"{path}: must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            problems.append(f"{path}: must be an integer, got {value!r}")
        return value
    if annotation is float:
        return _coerce_float(value, path, problems)
    if annotation is str:
        if not isinstance(value, str):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            problems.append(f"{path}: must be text, got {value!r}")
        return value
    return value


def _build(cls: type, data: Any, path: str, problems: list[str]) -> Any:
    """Instantiate dataclass ``cls`` from ``data``, collecting problems instead of raising."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = path or "the config"
        problems.append(f"{where}: must be a mapping of fields, got {data!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    known = {item.name for item in fields(cls)}
    for key in data:
        if key not in known:
            dotted = f"{path}.{key}" if path else str(key)
            problems.append(f"{dotted}: unknown field{did_you_mean(str(key), known)}; "
                            f"valid fields: {', '.join(sorted(known))}")
    values = {}
    for item in fields(cls):
        if item.name not in data:
            continue
        dotted = f"{path}.{item.name}" if path else item.name
        annotation = hints[item.name]
        if isinstance(annotation, type) and is_dataclass(annotation):
            values[item.name] = _build(annotation, data[item.name], dotted, problems)
            continue
        known_problems = len(problems)
        value = _coerce(data[item.name], annotation, dotted, problems)
        # A value of the wrong type keeps the default, so that the cross-field rules that run
        # next compare numbers with numbers; its problem is already reported.
        if len(problems) == known_problems:
            values[item.name] = value
    return cls(**values)


def config_from_dict(data: Any, source: str = "<config>", validate: bool = True
                     ) -> ExperimentConfig:
    """Build an ExperimentConfig; raise ConfigError naming every problem (structure and rules)."""
    problems: list[str] = []
    config = _build(ExperimentConfig, data, "", problems)
    if validate:
        seen = set(problems)
        problems += [problem for problem in validate_config(config) if problem not in seen]
    if problems:
        raise ConfigError(source, problems)
    return config


def read_yaml_mapping(path: str | Path) -> dict:
    """Parse a YAML file into a dict; syntax errors name the line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found; check the path"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(str(path), [f"cannot read the file: {error}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(str(path), [f"YAML syntax error at {where}{problem}"]) from None
    if data is None:
        raise ConfigError(str(path), ["the file is empty; see experiments/configs/quickstart.yaml"])
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["the top level must be a mapping of sections "
                                      "(experiment_name:, model:, training:, ...)"])
    return data


def apply_overrides(data: dict, overrides: list[str], source: str = "--set") -> dict:
    """Apply ``section.field=value`` overrides (values parsed as YAML) to a config mapping.

    >>> apply_overrides({"training": {"epochs": 3}}, ["training.epochs=1"])
    {'training': {'epochs': 1}}
    """
    problems = []
    for override in overrides:
        key, separator, raw_value = override.partition("=")
        if not separator or not key.strip():
            problems.append(f"{override!r}: expected section.field=value, e.g. training.epochs=1")
            continue
        try:
            value = yaml.safe_load(raw_value) if raw_value.strip() else None
        except yaml.YAMLError:
            value = raw_value
        target = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[parts[-1]] = value
    if problems:
        raise ConfigError(source, problems)
    return data


def load_yaml_config(path: str | Path, overrides: list[str] | None = None,
                     validate: bool = True) -> ExperimentConfig:
    """Read, override and validate a YAML config; raises ConfigError with every problem."""
    data = apply_overrides(read_yaml_mapping(path), overrides or [])
    return config_from_dict(data, str(path), validate=validate)


def config_to_yaml(config: ExperimentConfig) -> str:
    """YAML text of the config, sections in their declared order."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)


def save_yaml_config(config: ExperimentConfig, path: str | Path) -> None:
    """Write ``config`` to ``path`` as YAML, atomically."""
    atomic_write_text(path, config_to_yaml(config))
