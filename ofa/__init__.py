"""ofa: train one elastic supernet once, then hand every device the subnet that fits its budget.

The core (this package) needs only torch, timm and numpy: search spaces, dynamic layers, supernet families,
exact dense extraction, the analytic cost model, channel sorting, BN recalibration and weight files.
Attributes are imported on first use, so ``import ofa`` and ``ofa --help`` are fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "Arch": "space", "SearchSpace": "space",
    "ArchError": "errors", "OFAError": "errors", "WeightsError": "errors",
    "BNState": "bn", "calibrate_bn": "bn",
    "count_macs": "costs", "count_params": "costs",
    "DynamicBatchNorm2d": "layers", "DynamicConv2d": "layers", "DynamicLinear": "layers",
    "make_divisible": "layers",
    "create_supernet": "registry", "list_supernets": "registry",
    "CRITERIA": "sorting", "channel_importance": "sorting", "sort_channels": "sorting",
    "Metrics": "evaluate", "evaluate": "evaluate", "wilson_interval": "evaluate",
    "StaticNet": "static", "Supernet": "supernet", "from_timm": "timm_import",
    "load": "io", "save": "io",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from .bn import BNState, calibrate_bn
    from .costs import count_macs, count_params
    from .errors import ArchError, OFAError, WeightsError
    from .evaluate import Metrics, evaluate, wilson_interval
    from .io import load, save
    from .layers import DynamicBatchNorm2d, DynamicConv2d, DynamicLinear, make_divisible
    from .registry import create_supernet, list_supernets
    from .sorting import CRITERIA, channel_importance, sort_channels
    from .space import Arch, SearchSpace
    from .static import StaticNet
    from .supernet import Supernet
    from .timm_import import from_timm
