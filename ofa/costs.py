"""The analytic cost model: MACs and parameters of any arch, without running the network.

The search calls these tens of thousands of times; they agree with ``torch.utils.flop_counter`` (FLOPs / 2)
and with the parameter count of the extracted network.
"""

from __future__ import annotations

from collections.abc import Mapping

from .space import Arch


def count_macs(net, arch: Arch | Mapping | None = None) -> int:
    """Multiply-accumulates of one image through ``arch`` (default: the active arch) of ``net``."""
    return net.costs(arch)[0]


def count_params(net, arch: Arch | Mapping | None = None) -> int:
    """Parameters of the dense network of ``arch`` (default: the active arch), BatchNorm included."""
    return net.costs(arch)[1]
