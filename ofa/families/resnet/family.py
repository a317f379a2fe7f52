"""The ResNet family's hooks: its classes, its timed latency units and its timm importer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...family import Family
from . import timm as resnet_timm
from .blocks import BLOCKS, Stem
from .dense import StaticResNet
from .supernet import OFAResNet


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class PoolHead(nn.Module):
    """Global average pooling and the classifier: the last timed unit."""

    def __init__(self, in_c: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class ResNetFamily(Family, name="resnet", supernet=OFAResNet, dense=StaticResNet, timm=resnet_timm):
    def latency_units(self, spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Stem, every block, head. A key names every shape that changes the unit's time (channels, stride,
        projection, input size), so two subnets sharing a block shape share its measurement."""
        size, res = spec["resolution"], spec["resolution"]
        units = [(f"stem|{spec['stem_type']}|{spec['in_chans']}|{spec['stem']}|{res}",
                  {"kind": "stem", "stem_type": spec["stem_type"], "in_chans": spec["in_chans"],
                   "out": spec["stem"], "size": res})]
        if spec["stem_type"] == "conv7_pool":
            size = _conv_out(_conv_out(size, 7, 2, 3), 3, 2, 1)
        for stage in spec["stages"]:
            for c_in, mid, out, stride, downsample in stage:
                units.append((f"{spec['block']}|{c_in}|{mid}|{out}|{stride}|{int(bool(downsample))}|{size}",
                              {"kind": "block", "block": spec["block"], "in_c": c_in, "mid": mid, "out": out,
                               "stride": stride, "downsample": bool(downsample), "size": size}))
                size = _conv_out(size, 3, stride, 1)
        last = spec["stages"][-1][-1][2]
        units.append((f"head|{last}|{spec['num_classes']}|{size}",
                      {"kind": "head", "in_c": last, "num_classes": spec["num_classes"], "size": size}))
        return units

    def build_unit(self, unit: Mapping[str, Any]) -> tuple[nn.Module, tuple[int, ...]]:
        kind, size = unit["kind"], unit["size"]
        if kind == "stem":
            return Stem(unit["in_chans"], unit["out"], unit["stem_type"]), (unit["in_chans"], size, size)
        if kind == "block":
            block = BLOCKS[unit["block"]](unit["in_c"], unit["mid"], unit["out"], unit["stride"], unit["downsample"])
            return block, (unit["in_c"], size, size)
        return PoolHead(unit["in_c"], unit["num_classes"]), (unit["in_c"], size, size)
