"""Lazy package attributes: ``import pkg`` stays light, and ``pkg.name`` imports its submodule on first use."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for ``package`` exporting ``{name: submodule}``."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            module = importlib.import_module(f".{exports[name]}", package)
            # Importing a submodule binds it on the package under its own name, which hides an export of the same
            # name (ofa.evaluate the module, not the function, once ofa.Metrics was looked up first): bind every
            # export of that submodule now. Later lookups skip this function.
            for export, sub in exports.items():
                if sub == exports[name]:
                    setattr(sys.modules[package], export, getattr(module, export))
            return getattr(sys.modules[package], name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
