"""The MobileNetV3/EfficientNet family's hooks: its classes, its timed latency units and its timm importer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ...factory import STATIC
from ...family import Family
from . import timm as mbconv_timm
from .blocks import ConvBnAct, DepthwiseSeparable, InvertedResidual, make_act
from .dense import StaticMBConvNet, run_head
from .supernet import OFAMobileNet


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


class Stem(nn.Module):
    """The stem as a unit of its own: 3x3 conv, BN, activation (named as in the network)."""

    def __init__(self, in_chans: int, out: int, stride: int, act: str) -> None:
        super().__init__()
        self.conv_stem = STATIC.conv(in_chans, out, 3, stride)
        self.bn1 = STATIC.bn(out)
        self.act1 = make_act(act)

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return [("conv_stem", "bn1")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv_stem(x)))


class Head(nn.Module):
    """The head as a unit of its own: MobileNetV3's final expand, pool, conv_head; or EfficientNet's conv_head,
    BN, pool; then the classifier."""

    def __init__(self, style: str, in_c: int, head: int, features: int, act: str, num_classes: int) -> None:
        super().__init__()
        if style == "mobilenetv3":
            self.final = ConvBnAct(in_c, head, act)
            self.conv_head = STATIC.conv(head, features, 1, bias=True)
            self.bn2 = None
        else:
            self.final = None
            self.conv_head = STATIC.conv(in_c, head, 1)
            self.bn2 = STATIC.bn(head)
            features = head
        self.act2 = make_act(act)
        self.classifier = STATIC.linear(features, num_classes)

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return [("conv_head", "bn2")] if self.bn2 is not None else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_head(x, self.final, self.conv_head, self.bn2, self.act2, self.classifier)


class MBConvFamily(Family, name="mbv3", supernet=OFAMobileNet, dense=StaticMBConvNet, timm=mbconv_timm):
    def latency_units(self, spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Stem, first block, every MBConv block, head. A key names every shape that changes the unit's time:
        channels, kernel, stride, squeeze-excite width, activation, residual and input size."""
        style, res = spec["style"], spec["resolution"]
        stem, stem_stride, stem_act = spec["stem"]
        se_args = {"se_act": spec["se_act"], "se_gate": spec["se_gate"]}
        units = [(f"stem|{spec['in_chans']}|{stem}|{stem_stride}|{stem_act}|{res}",
                  {"kind": "stem", "in_chans": spec["in_chans"], "out": stem, "stride": stem_stride,
                   "act": stem_act, "size": res})]
        size = _conv_out(res, 3, stem_stride)
        blocks = [("first", spec["first"])] + [("mb", b) for stage in spec["stages"] for b in stage]
        for kind, block in blocks:
            in_c, mid, out, k, stride, se, act, skip = block
            units.append((f"{kind}|{style}|{in_c}|{mid}|{out}|{k}|{stride}|{se}|{act}|{int(skip)}|{size}",
                          {"kind": kind, "block": list(block), **se_args, "size": size}))
            size = _conv_out(size, k, stride)
        head, features, head_act = spec["head"]
        last = spec["stages"][-1][-1][2]
        units.append((f"head|{style}|{last}|{head}|{features}|{head_act}|{spec['num_classes']}|{size}",
                      {"kind": "head", "style": style, "in_c": last, "head": head, "features": features,
                       "act": head_act, "num_classes": spec["num_classes"], "size": size}))
        return units

    def build_unit(self, unit: Mapping[str, Any]) -> tuple[nn.Module, tuple[int, ...]]:
        kind, size = unit["kind"], unit["size"]
        if kind == "stem":
            return Stem(unit["in_chans"], unit["out"], unit["stride"], unit["act"]), (unit["in_chans"], size, size)
        if kind in ("first", "mb"):
            block_cls = DepthwiseSeparable if kind == "first" else InvertedResidual
            block = unit["block"]
            return block_cls(*block, unit["se_act"], unit["se_gate"]), (block[0], size, size)
        module = Head(unit["style"], unit["in_c"], unit["head"], unit["features"], unit["act"],
                      unit["num_classes"])
        return module, (unit["in_c"], size, size)
