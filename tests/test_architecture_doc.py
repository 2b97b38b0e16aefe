"""docs/architecture.md describes the run directory that the code writes, key for key."""

from __future__ import annotations

import json
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
# Keys a run has only in some situations, each explained under the example.
CONDITIONAL = {"interrupted_at_step", "cross_validation", "cloud", "data.fold", "data.num_folds"}
# Sections whose inner keys depend on the data (label names, what loading skipped, languages).
OPEN_SECTIONS = {"data.counts", "data.splits", "data.languages.shares", "eval.per_class", "test"}


def documented_results() -> dict:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"`results\.json` \(every key.*?```json\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md lost its results.json example"
    return json.loads(block.group(1))


def key_paths(value: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, inner in value.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(inner, dict) and path not in OPEN_SECTIONS:
            paths |= key_paths(inner, f"{path}.")
    return paths


def test_the_results_example_has_exactly_the_keys_a_run_writes(tiny_run_dir):
    written = key_paths(json.loads((tiny_run_dir / "results.json").read_text(encoding="utf-8")))
    documented = key_paths(documented_results())
    assert written - documented - CONDITIONAL == set(), "written but not documented"
    assert documented - written == set(), "documented but not written"


def test_every_file_of_a_run_is_in_the_layout_table(tiny_run_dir):
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("## The run directory"):text.index("`results.json` (every key")]
    listed = set(re.findall(r"^\| `([^`]+)` \|", table, re.M))
    top_level = {path.split("/")[0] for path in listed}
    assert {entry.name for entry in tiny_run_dir.iterdir()} <= top_level
    for entry in (tiny_run_dir / "predictions").iterdir():
        assert f"predictions/{entry.name}" in listed
    assert (tiny_run_dir / "final_model" / "calibration.json").is_file()
    assert "final_model/calibration.json" in listed
