"""The packages of backend/ml import only what docs/architecture.md's table allows them, and no
two of them import each other; function-level imports count as much as module-level ones."""

from __future__ import annotations

import ast
import re
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

from support.cli import REPO_ROOT

PACKAGE_ROOT = REPO_ROOT / "backend" / "ml"
ARCHITECTURE = REPO_ROOT / "docs" / "architecture.md"
_ROW = re.compile(r"^\| `(?P<unit>[a-z_]+)` \|.*\| (?P<allowed>[^|]+) \|$")


def unit_of(path: Path) -> str:
    """A package's name for its modules, a top-level module's own name."""
    parts = path.relative_to(PACKAGE_ROOT).parts
    return parts[0] if len(parts) > 1 else path.stem


def units() -> set[str]:
    return {unit_of(path) for path in PACKAGE_ROOT.rglob("*.py")} - {"__init__"}


def imported_units(path: Path) -> set[str]:
    """The other units that ``path`` imports anywhere in its body."""
    package = list(path.relative_to(PACKAGE_ROOT).parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            found.update(target[:1] or [alias.name for alias in node.names])
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("backend.ml."):
                found.add(node.module.split(".")[2])
            elif node.module == "backend.ml":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[2] for alias in node.names
                         if alias.name.startswith("backend.ml."))
    return (found & units()) - {unit_of(path)}


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {unit: set() for unit in units()}
    for path in PACKAGE_ROOT.rglob("*.py"):
        if path.relative_to(PACKAGE_ROOT).parts != ("__init__.py",):
            graph[unit_of(path)] |= imported_units(path)
    return graph


def documented_layers() -> dict[str, set[str] | None]:
    """Unit -> the units its row allows (None: everything), from the table's rows."""
    layers: dict[str, set[str] | None] = {}
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line.strip())
        if match:
            allowed = match["allowed"].strip()
            layers[match["unit"]] = (None if allowed == "everything" else
                                     set(re.findall(r"`([a-z_]+)`", allowed)))
    return layers


def test_every_package_has_a_row_and_every_row_a_package():
    assert set(documented_layers()) == units()


def test_no_package_imports_what_its_row_does_not_allow():
    layers = documented_layers()
    forbidden = {}
    for unit, imported in import_graph().items():
        allowed = layers[unit]
        if allowed is not None and imported - allowed:
            forbidden[unit] = sorted(imported - allowed)
    assert forbidden == {}, f"imports that docs/architecture.md does not allow: {forbidden}"


def test_no_packages_import_each_other_in_a_circle():
    try:
        list(TopologicalSorter(import_graph()).static_order())
    except CycleError as error:
        pytest.fail(f"packages import each other: {' -> '.join(error.args[1])}")


def test_only_the_cli_imports_the_cloud():
    importers = {unit for unit, imported in import_graph().items() if "cloud" in imported}
    assert importers == {"cli"}


def test_a_function_level_import_counts(tmp_path, monkeypatch):
    package = tmp_path / "backend" / "ml"
    for name in ("inference", "registry", "cloud"):
        (package / name).mkdir(parents=True)
        (package / name / "__init__.py").write_text("")
    module = package / "inference" / "lazy.py"
    module.write_text("def later():\n    from ..registry import ModelRegistry\n"
                      "    from backend.ml.cloud import commands\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_ROOT", package)
    assert imported_units(module) == {"registry", "cloud"}
