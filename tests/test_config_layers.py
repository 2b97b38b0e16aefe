"""The config package's modules import each other one way only, function-level imports included."""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import backend.ml.config

PACKAGE_DIR = Path(backend.ml.config.__file__).parent
PACKAGE = "backend.ml.config"


def _imported_modules(path: Path) -> set[str]:
    """The package's modules that ``path`` imports anywhere in its body, by module name."""
    own_name = path.stem
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1:
                base = module
            elif node.level == 0 and module.startswith(f"{PACKAGE}."):
                base = module.removeprefix(f"{PACKAGE}.")
            elif node.level == 0 and module == PACKAGE:
                base = ""
            else:
                continue
            # `from . import loading` names the module in the imported names instead.
            targets = [base.split(".")[0]] if base else [alias.name for alias in node.names]
            found.update(targets)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(f"{PACKAGE}."):
                    found.add(alias.name.removeprefix(f"{PACKAGE}.").split(".")[0])
    modules = {module.stem for module in PACKAGE_DIR.glob("*.py")} - {"__init__"}
    return (found & modules) - {own_name}


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports; the package ``__init__`` is the facade."""
    return {path.stem: _imported_modules(path) for path in PACKAGE_DIR.glob("*.py")
            if path.stem != "__init__"}


def test_config_modules_import_each_other_without_cycles():
    graph = import_graph()
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        raise AssertionError(f"import cycle in {PACKAGE}: {' -> '.join(error.args[1])}") from None
    assert order.index("schema") < order.index("validation") < order.index("loading")


def test_schema_is_the_bottom_layer():
    assert import_graph()["schema"] == set()


def test_function_level_imports_count(tmp_path):
    module = tmp_path / "lazy.py"
    module.write_text("def later():\n    from .schema import ExperimentSchema\n"
                      "    from . import sweep\n", encoding="utf-8")
    assert _imported_modules(module) == {"schema", "sweep"}
