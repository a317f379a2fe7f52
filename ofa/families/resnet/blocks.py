"""ResNet blocks, written once: a layer factory makes them elastic (supernet) or plain (extracted network).

Module names equal timm's (``conv1``, ``bn1``, ``downsample.0``...), so timm weights load by name.
``set_channels``, ``mid_groups`` and ``output_producer`` serve the elastic build (active channels and channel
sorting); ``conv_bn_pairs`` serves BN folding of the plain build.
"""

from __future__ import annotations

import torch
from torch import nn

from ...factory import STATIC, Layers
from ...sorting import ChannelGroup


class _ResidualBlock(nn.Module):
    """What both blocks share: the optional 1x1 projection shortcut and the residual addition."""

    convs: tuple[str, ...] = ()

    def _shortcut(self, layers: Layers, in_c: int, out: int, stride: int, downsample: bool) -> None:
        self.downsample = nn.Sequential(layers.conv(in_c, out, 1, stride), layers.bn(out)) if downsample else None

    def set_channels(self, mid: int, out: int) -> None:
        """Active channels of the elastic build: the middle convolutions write ``mid``, the last one ``out``."""
        for name in self.convs[:-1]:
            getattr(self, name).active_out = mid
        getattr(self, self.convs[-1]).active_out = out
        if self.downsample is not None:
            self.downsample[0].active_out = out

    def mid_groups(self) -> list[ChannelGroup]:
        return [ChannelGroup([(getattr(self, c), getattr(self, "bn" + c[4:]))], [getattr(self, n)])
                for c, n in zip(self.convs, self.convs[1:])]

    def output_producer(self) -> tuple[nn.Module, nn.Module]:
        last = self.convs[-1]
        return getattr(self, last), getattr(self, "bn" + last[4:])

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        pairs = [(c, "bn" + c[4:]) for c in self.convs]
        return pairs + ([("downsample.0", "downsample.1")] if self.downsample is not None else [])


class BasicBlock(_ResidualBlock):
    convs = ("conv1", "conv2")

    def __init__(self, in_c: int, mid: int, out: int, stride: int, downsample: bool,
                 layers: Layers = STATIC) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = layers.conv(in_c, mid, 3, stride), layers.bn(mid), nn.ReLU(inplace=True)
        self.conv2, self.bn2, self.act2 = layers.conv(mid, out, 3), layers.bn(out), nn.ReLU(inplace=True)
        self._shortcut(layers, in_c, out, stride, downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class Bottleneck(_ResidualBlock):
    convs = ("conv1", "conv2", "conv3")

    def __init__(self, in_c: int, mid: int, out: int, stride: int, downsample: bool,
                 layers: Layers = STATIC) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = layers.conv(in_c, mid, 1), layers.bn(mid), nn.ReLU(inplace=True)
        self.conv2, self.bn2, self.act2 = layers.conv(mid, mid, 3, stride), layers.bn(mid), nn.ReLU(inplace=True)
        self.conv3, self.bn3, self.act3 = layers.conv(mid, out, 1), layers.bn(out), nn.ReLU(inplace=True)
        self._shortcut(layers, in_c, out, stride, downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act3(x + shortcut)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def add_stem(module: nn.Module, in_chans: int, out: int, stem_type: str, layers: Layers) -> None:
    """The stem's layers, added to ``module`` under timm's names: conv, BN, ReLU and the 7x7 stem's max pool."""
    big = stem_type == "conv7_pool"
    module.conv1 = layers.conv(in_chans, out, 7 if big else 3, 2 if big else 1)
    module.bn1 = layers.bn(out)
    module.act1 = nn.ReLU(inplace=True)
    module.maxpool = nn.MaxPool2d(3, 2, 1) if big else nn.Identity()


def run_stem(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module.maxpool(module.act1(module.bn1(module.conv1(x))))


class Stem(nn.Module):
    """The stem as a unit of its own (latency tables)."""

    def __init__(self, in_chans: int, out: int, stem_type: str, layers: Layers = STATIC) -> None:
        super().__init__()
        add_stem(self, in_chans, out, stem_type, layers)

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return [("conv1", "bn1")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_stem(self, x)
