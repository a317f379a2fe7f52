"""Dynamic MBConv building blocks, named like timm's EfficientNet/MobileNetV3 blocks.

Module names equal timm's (``conv_dw``, ``bn1``, ``se.conv_reduce``, ``conv_pwl``...), so a timm model's state dict
loads into the supernet, and the dense network built from the same names receives the extracted weights.
"""

from __future__ import annotations

import torch
from torch import nn

from .kernel import DynamicKernelConv2d
from .layers import DynamicBatchNorm2d, DynamicConv2d
from .sorting import ChannelGroup

_ACTS = {"relu": lambda: nn.ReLU(inplace=True), "hswish": nn.Hardswish, "silu": lambda: nn.SiLU(inplace=True),
         "hard_sigmoid": nn.Hardsigmoid, "sigmoid": nn.Sigmoid}


def make_act(name: str) -> nn.Module:
    return _ACTS[name]()


class SqueezeExcite(nn.Module):
    """Squeeze-excite over the input's channels; works for plain and dynamic 1x1 convolutions alike."""

    def __init__(self, channels: int, reduced: int, act: str, gate: str, dynamic: bool = False) -> None:
        super().__init__()
        def conv(cin: int, cout: int) -> nn.Conv2d:
            return DynamicConv2d(cin, cout, 1, bias=True) if dynamic else nn.Conv2d(cin, cout, 1)

        self.conv_reduce = conv(channels, reduced)
        self.act1 = make_act(act)
        self.conv_expand = conv(reduced, channels)
        self.gate = make_act(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.conv_expand, DynamicConv2d):
            self.conv_expand.active_out = x.shape[1]
        s = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * self.gate(s)


class DynamicDepthwiseSeparable(nn.Module):
    """The first block: depthwise conv on the stem's channels, optional SE, pointwise projection."""

    def __init__(self, in_c: int, out: int, kernel: int, se: int, act: str, se_act: str, se_gate: str,
                 skip: bool) -> None:
        super().__init__()
        self.conv_dw = DynamicConv2d(in_c, in_c, kernel, 1, depthwise=True)
        self.bn1 = DynamicBatchNorm2d(in_c)
        self.act1 = make_act(act)
        self.se = SqueezeExcite(in_c, se, se_act or act, se_gate, dynamic=True) if se else None
        self.conv_pw = DynamicConv2d(in_c, out, 1)
        self.bn2 = DynamicBatchNorm2d(out)
        self.has_skip = skip

    def set_channels(self, out: int, se: int) -> None:
        self.conv_pw.active_out = out
        if self.se is not None:
            self.se.conv_reduce.active_out = se

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv_dw(x)))
        if self.se is not None:
            x = self.se(x)
        x = self.bn2(self.conv_pw(x))
        return x + shortcut if self.has_skip else x


class DynamicInvertedResidual(nn.Module):
    """MBConv: pointwise expand, depthwise (elastic kernel), optional SE, pointwise project, residual if shapes match."""

    def __init__(self, in_c: int, mid: int, out: int, kernels: tuple[int, ...], stride: int, se: int, act: str,
                 se_act: str | None, se_gate: str, skip: bool) -> None:
        super().__init__()
        self.conv_pw = DynamicConv2d(in_c, mid, 1)
        self.bn1 = DynamicBatchNorm2d(mid)
        self.act1 = make_act(act)
        self.conv_dw = DynamicKernelConv2d(mid, kernels, stride)
        self.bn2 = DynamicBatchNorm2d(mid)
        self.act2 = make_act(act)
        self.se = SqueezeExcite(mid, se, se_act or act, se_gate, dynamic=True) if se else None
        self.conv_pwl = DynamicConv2d(mid, out, 1)
        self.bn3 = DynamicBatchNorm2d(out)
        self.has_skip = skip

    def set_channels(self, mid: int, out: int, kernel: int, se: int) -> None:
        self.conv_pw.active_out = mid
        self.conv_dw.active_kernel = kernel
        if self.se is not None:
            self.se.conv_reduce.active_out = se
        self.conv_pwl.active_out = out

    def mid_group(self) -> ChannelGroup:
        """The middle channels: written by conv_pw/bn1, carried through the depthwise conv, BN and SE gate."""
        passthrough: list[nn.Module] = [self.conv_dw, self.bn2]
        consumers: list[nn.Module] = [self.conv_pwl]
        if self.se is not None:
            passthrough.append(self.se.conv_expand)
            consumers.append(self.se.conv_reduce)
        return ChannelGroup([(self.conv_pw, self.bn1)], consumers, passthrough=passthrough)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv_pw(x)))
        x = self.act2(self.bn2(self.conv_dw(x)))
        if self.se is not None:
            x = self.se(x)
        x = self.bn3(self.conv_pwl(x))
        return x + shortcut if self.has_skip else x


class ConvBnAct(nn.Module):
    """MobileNetV3's final expand (a 1x1 conv, BN and activation), named like timm's ``ConvBnAct``."""

    def __init__(self, in_c: int, out: int, act: str, dynamic: bool = True) -> None:
        super().__init__()
        self.conv = DynamicConv2d(in_c, out, 1) if dynamic else nn.Conv2d(in_c, out, 1, bias=False)
        self.bn1 = DynamicBatchNorm2d(out) if dynamic else nn.BatchNorm2d(out)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn1(self.conv(x)))
