"""train: progressive shrinking with sandwich sampling and in-place distillation, on accelerate.

``train.data`` (datasets and splits) is what search and deploy use; ``train.trainer.train`` runs a config. Names
are imported on first use so that ``import train.data`` does not pull in accelerate.
"""

from __future__ import annotations

from ofa.lazy import lazy_exports

_EXPORTS = {"train": "trainer", "TrainResult": "trainer", "NonFiniteLossError": "trainer",
            "load_data": "data", "load_run_data": "data", "Data": "data"}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
