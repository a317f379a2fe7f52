"""train: progressive shrinking with sandwich sampling and in-place distillation, on accelerate.

``train.trainer.train`` runs a config; the datasets it trains on live in the core (``ofa.data``), shared with search
and deploy. Names are imported on first use so that ``import train`` does not pull in accelerate.
"""

from __future__ import annotations

from ofa.lazy import lazy_exports

_EXPORTS = {"train": "trainer", "TrainResult": "trainer", "NonFiniteLossError": "trainer"}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
