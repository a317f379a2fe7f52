"""train: progressive shrinking with sandwich sampling and in-place distillation, on accelerate.

``train.data`` (datasets and splits) is what search and deploy use; ``train.trainer.train`` runs a config. Names
are imported on first use so that ``import train.data`` does not pull in accelerate.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"train": "trainer", "TrainResult": "trainer", "NonFiniteLossError": "trainer",
            "load_data": "data", "load_run_data": "data", "Data": "data"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'train' has no attribute {name!r}")
