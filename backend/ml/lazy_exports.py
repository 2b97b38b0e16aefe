"""Package attributes imported on first use, so that importing a light submodule (a package's
``commands``, which the CLI parser needs) does not import the package's heavy ones (torch,
transformers, scipy).

>>> __getattr__, __dir__ = lazy_exports(__name__, {"run_pretraining": ".run"})  # doctest: +SKIP
>>> from backend.ml.pretraining import run_pretraining  # imports .run only now  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """PEP 562 ``__getattr__`` and ``__dir__`` for ``package``: ``exports`` maps each public
    name to the relative module that defines it."""
    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
