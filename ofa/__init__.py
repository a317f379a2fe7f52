"""ofa: train one elastic supernet once, then hand every device the subnet that fits its budget.

The core (this package) needs only torch, timm and numpy: search spaces, dynamic layers, supernet families,
exact dense extraction, the analytic cost model, channel sorting, BN recalibration and weight files.
"""

__version__ = "0.1.0"

from . import resnet  # noqa: F401  (registers the ResNet family and its supernets)
from .bn import BNState, calibrate_bn
from .costs import count_macs, count_params
from .errors import ArchError, OFAError, WeightsError
from .io import load, save
from .layers import DynamicBatchNorm2d, DynamicConv2d, DynamicLinear, make_divisible
from .registry import create_supernet, list_supernets
from .sorting import CRITERIA, channel_importance, sort_channels
from .space import Arch, SearchSpace
from .static import StaticNet
from .supernet import Supernet
from .timm_import import from_timm

__all__ = [
    "Arch", "ArchError", "BNState", "CRITERIA", "DynamicBatchNorm2d", "DynamicConv2d", "DynamicLinear",
    "OFAError", "SearchSpace", "StaticNet", "Supernet", "WeightsError", "calibrate_bn", "channel_importance",
    "count_macs", "count_params", "create_supernet", "from_timm", "list_supernets", "load", "make_divisible",
    "save", "sort_channels",
]
