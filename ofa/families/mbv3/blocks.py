"""MBConv blocks, written once: a layer factory makes them elastic (supernet) or plain (extracted network).

Module names equal timm's EfficientNet/MobileNetV3 blocks (``conv_dw``, ``bn1``, ``se.conv_reduce``,
``conv_pwl``...), so a timm model's state dict loads into the supernet by name. Blocks take their dense spec's
fields in order: ``in_c, mid, out, kernel, stride, se, act, skip`` (``se``: squeeze-excite reduced channels, 0
without SE). An elastic build passes the stage's kernel choices as ``kernel``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...factory import STATIC, Layers
from ...sorting import ChannelGroup

_ACTS = {"relu": lambda: nn.ReLU(inplace=True), "hswish": nn.Hardswish, "silu": lambda: nn.SiLU(inplace=True),
         "hard_sigmoid": nn.Hardsigmoid, "sigmoid": nn.Sigmoid}


def make_act(name: str) -> nn.Module:
    return _ACTS[name]()


class SqueezeExcite(nn.Module):
    """Squeeze-excite over the input's channels: pool, 1x1 reduce, activation, 1x1 expand, gate."""

    def __init__(self, channels: int, reduced: int, act: str, gate: str, layers: Layers = STATIC) -> None:
        super().__init__()
        self.conv_reduce = layers.conv(channels, reduced, 1, bias=True)
        self.act1 = make_act(act)
        self.conv_expand = layers.conv(reduced, channels, 1, bias=True)
        self.gate = make_act(gate)

    def set_channels(self, channels: int, reduced: int) -> None:
        self.conv_reduce.active_out = reduced
        self.conv_expand.active_out = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * self.gate(s)


class DepthwiseSeparable(nn.Module):
    """The first block: depthwise conv on the stem's channels, optional SE, pointwise projection."""

    def __init__(self, in_c: int, mid: int, out: int, kernel: int | Sequence[int], stride: int, se: int, act: str,
                 skip: bool, se_act: str | None, se_gate: str, layers: Layers = STATIC) -> None:
        super().__init__()
        self.conv_dw, self.bn1, self.act1 = layers.dw_conv(in_c, kernel, stride), layers.bn(in_c), make_act(act)
        self.se = SqueezeExcite(in_c, se, se_act or act, se_gate, layers) if se else None
        self.conv_pw, self.bn2 = layers.conv(in_c, out, 1), layers.bn(out)
        self.has_skip = skip

    def set_channels(self, in_c: int, out: int, se: int) -> None:
        self.conv_pw.active_out = out
        if self.se is not None:
            self.se.set_channels(in_c, se)

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return [("conv_dw", "bn1"), ("conv_pw", "bn2")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv_dw(x)))
        x = x if self.se is None else self.se(x)
        x = self.bn2(self.conv_pw(x))
        return x + shortcut if self.has_skip else x


class InvertedResidual(nn.Module):
    """MBConv: pointwise expand, depthwise (elastic kernel), optional SE, pointwise project, residual if shapes match."""

    def __init__(self, in_c: int, mid: int, out: int, kernel: int | Sequence[int], stride: int, se: int, act: str,
                 skip: bool, se_act: str | None, se_gate: str, layers: Layers = STATIC) -> None:
        super().__init__()
        self.conv_pw, self.bn1, self.act1 = layers.conv(in_c, mid, 1), layers.bn(mid), make_act(act)
        self.conv_dw, self.bn2, self.act2 = layers.dw_conv(mid, kernel, stride), layers.bn(mid), make_act(act)
        self.se = SqueezeExcite(mid, se, se_act or act, se_gate, layers) if se else None
        self.conv_pwl, self.bn3 = layers.conv(mid, out, 1), layers.bn(out)
        self.has_skip = skip

    def set_channels(self, mid: int, out: int, kernel: int, se: int) -> None:
        self.conv_pw.active_out = mid
        self.conv_dw.active_kernel = kernel
        if self.se is not None:
            self.se.set_channels(mid, se)
        self.conv_pwl.active_out = out

    def mid_group(self) -> ChannelGroup:
        """The middle channels: written by conv_pw/bn1, carried through the depthwise conv, BN and SE gate."""
        passthrough: list[nn.Module] = [self.conv_dw, self.bn2]
        consumers: list[nn.Module] = [self.conv_pwl]
        if self.se is not None:
            passthrough.append(self.se.conv_expand)
            consumers.append(self.se.conv_reduce)
        return ChannelGroup([(self.conv_pw, self.bn1)], consumers, passthrough=passthrough)

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return [("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv_pw(x)))
        x = self.act2(self.bn2(self.conv_dw(x)))
        x = x if self.se is None else self.se(x)
        x = self.bn3(self.conv_pwl(x))
        return x + shortcut if self.has_skip else x


class ConvBnAct(nn.Module):
    """MobileNetV3's final expand (a 1x1 conv, BN and activation), named like timm's ``ConvBnAct``."""

    def __init__(self, in_c: int, out: int, act: str, layers: Layers = STATIC) -> None:
        super().__init__()
        self.conv = layers.conv(in_c, out, 1)
        self.bn1 = layers.bn(out)
        self.act = make_act(act)

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return [("conv", "bn1")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn1(self.conv(x)))
