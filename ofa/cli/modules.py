"""Finding this distribution's own stage packages (train, search, deploy) from the command line, which is the one
place in ``ofa`` allowed to import them, lazily."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from ..errors import OFAError


def own_module(name: str) -> ModuleType:
    """Import one of this distribution's packages, refusing a same-named module of the user's (e.g. ./train.py)."""
    module = importlib.import_module(name)
    ours = Path(__file__).resolve().parents[2]  # the folder holding ofa/, train/, search/, deploy/
    where = Path(getattr(module, "__file__", "") or "").resolve()
    if ours not in where.parents:
        raise OFAError(f"the module {name!r} was imported from {where}, not from ofa-supernet ({ours}); "
                       f"a file or folder named {name!r} in the working directory or on PYTHONPATH shadows it: "
                       "rename it or run ofa from another directory")
    return module


def foreign_ofa_distributions() -> list[str]:
    """Other installed distributions that also provide a top-level ``ofa`` module (e.g. once-for-all)."""
    from importlib.metadata import packages_distributions

    return sorted(d for d in packages_distributions().get("ofa", []) if d.lower() != "ofa-supernet")
