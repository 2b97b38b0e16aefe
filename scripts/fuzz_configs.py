"""Feed random YAML documents and ``--set`` values to config loading; count the outcomes.

Every case must end in a valid config (that round-trips through YAML) or a ConfigError with
readable problems; anything else is a crash, which Hypothesis shrinks to a minimal example.

    python scripts/fuzz_configs.py            # 10,000 cases
    python scripts/fuzz_configs.py --cases 500

The test suite runs the same property with a few dozen cases (tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.ml.config import ExperimentConfig, config_to_yaml, expand_sweep, load_yaml_config  # noqa: E402
from backend.ml.config.loading import config_from_dict  # noqa: E402
from backend.ml.errors import ConfigError  # noqa: E402


def _field_values(item) -> st.SearchStrategy:
    """Values a user might plausibly write for one field: default, choices, near the bounds."""
    metadata = item.metadata
    bounds = [metadata[key] for key in ("minimum", "maximum", "above", "below")
              if metadata.get(key) is not None]
    candidates = [value for bound in bounds for value in (bound, bound - 1, bound + 1, bound * 10)]
    candidates += list(metadata.get("choices") or [])
    if item.default is not MISSING:
        candidates.append(item.default)
    return st.sampled_from(candidates) if candidates else st.nothing()


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                    st.text(max_size=12), st.sampled_from(["1e-5", "2e-5", ".inf", "-0", "yes",
                                                           "~", "", " ", "0x1F", "1_000"]))
VALUES = st.recursive(SCALARS, lambda children: st.lists(children, max_size=3)
                      | st.dictionaries(st.text(max_size=6) | SCALARS.filter(
                          lambda key: key is None or isinstance(key, (str, int, bool))),
                          children, max_size=3), max_leaves=6)


def _section_strategy(section_type) -> st.SearchStrategy:
    entries = {item.name: st.one_of(_field_values(item), VALUES) for item in fields(section_type)}
    return st.fixed_dictionaries({}, optional=entries)


def _document_strategy() -> st.SearchStrategy:
    top = {}
    for item in fields(ExperimentConfig):
        if is_dataclass(item.type) or item.name in ("model", "training", "data", "logging",
                                                    "cloud"):
            section_type = type(getattr(ExperimentConfig(), item.name))
            top[item.name] = st.one_of(_section_strategy(section_type), VALUES)
        elif item.name == "sweep":
            top[item.name] = st.one_of(VALUES, st.dictionaries(
                st.sampled_from(DOTTED_FIELDS) | st.text(max_size=10) | st.integers(),
                st.lists(SCALARS, max_size=3) | SCALARS, max_size=2))
        else:
            top[item.name] = st.one_of(_field_values(item), VALUES)
    mapping = st.fixed_dictionaries({}, optional=top)
    structured = st.tuples(mapping, st.dictionaries(st.text(max_size=8), VALUES, max_size=2)
                           ).map(lambda pair: yaml.safe_dump({**pair[1], **pair[0]},
                                                              allow_unicode=True))
    raw_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=80)
    any_value = VALUES.map(lambda value: yaml.safe_dump(value, allow_unicode=True))
    return st.one_of(structured, structured, raw_text, any_value,
                     st.binary(max_size=40).map(lambda data: data.decode("latin-1")))


def _dotted_fields() -> list[str]:
    paths = []
    for item in fields(ExperimentConfig):
        value = getattr(ExperimentConfig(), item.name)
        if is_dataclass(value):
            paths += [f"{item.name}.{inner.name}" for inner in fields(value)]
        else:
            paths.append(item.name)
    return paths


DOTTED_FIELDS = _dotted_fields()
OVERRIDES = st.lists(st.builds(
    lambda key, value: f"{key}={value}",
    st.sampled_from(DOTTED_FIELDS) | st.text(max_size=12),
    st.text(max_size=12) | SCALARS.map(lambda value: yaml.safe_dump(value).strip())
    | st.sampled_from(["[1, 2]", "{a: 1}", "[", "'", "1e-3", "null"])), max_size=3)
DOCUMENTS = _document_strategy()


def config_outcome(document: str, overrides: list[str], directory: Path) -> str:
    """'valid' or 'error' for one case; raises AssertionError (or anything else) on a crash."""
    path = directory / "config.yaml"
    path.write_text(document, encoding="utf-8", errors="surrogateescape")
    try:
        configs = expand_sweep(load_yaml_config(path, overrides))
    except ConfigError as error:
        assert error.problems, "a ConfigError must list its problems"
        for problem in error.problems:
            assert isinstance(problem, str) and problem.strip(), f"unreadable problem {problem!r}"
        assert str(error).startswith(str(error.source))
        return "error"
    for config in configs:
        assert config.validate() == [], config.validate()
        assert config_from_dict(yaml.safe_load(config_to_yaml(config))) == config
    return "valid"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    args = parser.parse_args(argv)
    outcomes: Counter = Counter()

    with tempfile.TemporaryDirectory() as workspace:
        @settings(max_examples=args.cases, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(document=DOCUMENTS, overrides=OVERRIDES)
        def fuzz(document, overrides):
            outcomes[config_outcome(document, overrides, Path(workspace))] += 1

        fuzz()
    total = sum(outcomes.values())
    print(f"{total} cases: {outcomes['error']} clean errors (ConfigError), "
          f"{outcomes['valid']} valid configs, 0 crashes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
