"""ResNet supernets (basic and bottleneck blocks), named and structured like timm's ResNet.

Module names equal timm's (``conv1``, ``bn1``, ``layer1.0.conv2``, ``layer2.0.downsample.0``, ``fc``), so a timm
ResNet's state dict loads into the supernet as is, and the largest arch computes what the timm model computes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DynamicBatchNorm2d, DynamicConv2d, DynamicLinear
from .registry import register_family, register_supernet
from .resnet_plan import ResNetPlan
from .resnet_static import StaticResNet  # noqa: F401  (registers the dense counterpart)
from .sorting import ChannelGroup
from .space import Arch
from .supernet import Supernet


class DynamicBasicBlock(nn.Module):
    def __init__(self, in_c: int, mid: int, out: int, stride: int, downsample: bool) -> None:
        super().__init__()
        self.conv1 = DynamicConv2d(in_c, mid, 3, stride, 1)
        self.bn1 = DynamicBatchNorm2d(mid)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = DynamicConv2d(mid, out, 3, 1, 1)
        self.bn2 = DynamicBatchNorm2d(out)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(DynamicConv2d(in_c, out, 1, stride, 0), DynamicBatchNorm2d(out)) \
            if downsample else None

    def set_channels(self, mid: int, out: int) -> None:
        self.conv1.active_out = mid
        self.conv2.active_out = out
        if self.downsample is not None:
            self.downsample[0].active_out = out

    def mid_groups(self) -> list[ChannelGroup]:
        return [ChannelGroup([(self.conv1, self.bn1)], [self.conv2])]

    def output_producer(self) -> tuple[nn.Module, nn.Module]:
        return self.conv2, self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class DynamicBottleneck(nn.Module):
    def __init__(self, in_c: int, mid: int, out: int, stride: int, downsample: bool) -> None:
        super().__init__()
        self.conv1 = DynamicConv2d(in_c, mid, 1, 1, 0)
        self.bn1 = DynamicBatchNorm2d(mid)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = DynamicConv2d(mid, mid, 3, stride, 1)
        self.bn2 = DynamicBatchNorm2d(mid)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = DynamicConv2d(mid, out, 1, 1, 0)
        self.bn3 = DynamicBatchNorm2d(out)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(DynamicConv2d(in_c, out, 1, stride, 0), DynamicBatchNorm2d(out)) \
            if downsample else None

    def set_channels(self, mid: int, out: int) -> None:
        self.conv1.active_out = mid
        self.conv2.active_out = mid
        self.conv3.active_out = out
        if self.downsample is not None:
            self.downsample[0].active_out = out

    def mid_groups(self) -> list[ChannelGroup]:
        return [ChannelGroup([(self.conv1, self.bn1)], [self.conv2]),
                ChannelGroup([(self.conv2, self.bn2)], [self.conv3])]

    def output_producer(self) -> tuple[nn.Module, nn.Module]:
        return self.conv3, self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act3(x + shortcut)


@register_family
class OFAResNet(Supernet):
    """An elastic ResNet: depth per stage, width per stage (residual stream), expand per block, resolution."""

    family = "resnet"
    plan_class = ResNetPlan
    config_keys = ("block", "stage_channels", "depths", "strides", "stem_channels", "stem_type", "expand_ratios",
                   "width_mults", "stem_mults", "resolutions", "in_chans", "num_classes", "divisor",
                   "data_config", "origin")

    def __init__(self, block: str, stage_channels: list[int], depths: list[list[int]], strides: list[int],
                 stem_channels: int, stem_type: str, expand_ratios: list[float], width_mults: list[float],
                 stem_mults: list[float], resolutions: list[int], in_chans: int = 3, num_classes: int = 1000,
                 divisor: int = 8, data_config: dict | None = None, origin: dict | None = None,
                 name: str | None = None) -> None:
        config = dict(block=block, stage_channels=list(stage_channels), depths=[list(d) for d in depths],
                      strides=list(strides), stem_channels=stem_channels, stem_type=stem_type,
                      expand_ratios=list(expand_ratios), width_mults=list(width_mults),
                      stem_mults=list(stem_mults), resolutions=list(resolutions), in_chans=in_chans,
                      num_classes=num_classes, divisor=divisor)
        plan = ResNetPlan(**config)
        super().__init__(plan, config, name, data_config, origin)
        largest = plan.blocks(plan.space.largest())
        stem = plan.stem_width(plan.space.largest())
        if stem_type == "conv7_pool":
            self.conv1 = DynamicConv2d(in_chans, stem, 7, 2, 3)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = DynamicConv2d(in_chans, stem, 3, 1, 1)
            self.maxpool = nn.Identity()
        self.bn1 = DynamicBatchNorm2d(stem)
        self.act1 = nn.ReLU(inplace=True)
        block_cls = DynamicBottleneck if block == "bottleneck" else DynamicBasicBlock
        self.stages: list[nn.Sequential] = []
        for s, stage in enumerate(largest):
            layer = nn.Sequential(*(block_cls(b.in_c, b.mid, b.out, b.stride, b.downsample) for b in stage))
            self.add_module(f"layer{s + 1}", layer)
            self.stages.append(layer)
        self.fc = DynamicLinear(largest[-1][-1].out, num_classes)
        self._init_weights()
        self.set_active(self.active_arch)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _apply_arch(self, arch: Arch) -> None:
        self.conv1.active_out = self.plan.stem_width(arch)
        for layer, stage in zip(self.stages, self.plan.blocks(arch)):
            for block, b in zip(layer, stage):
                block.set_channels(b.mid, b.out)
        self._active_blocks = [block for layer, depth in zip(self.stages, arch.depths) for block in list(layer)[:depth]]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for block in self._active_blocks:
            x = block(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def channel_groups(self) -> list[ChannelGroup]:
        """Every set of channels that must be permuted together, and the layers that read them."""
        groups: list[ChannelGroup] = []
        stem = ChannelGroup([(self.conv1, self.bn1)], [], name="stem")
        stream = stem
        for s, layer in enumerate(self.stages):
            if s == 0 and self.plan.stem_tied:
                group = stem
                group.name = "stage0+stem"
            else:
                group = ChannelGroup([], [], name=f"stage{s}")
            for b, block in enumerate(layer):
                (stream if b == 0 else group).consumers.append(block.conv1)
                if block.downsample is not None:
                    stream.consumers.append(block.downsample[0])
                    group.producers.append((block.downsample[0], block.downsample[1]))
                group.producers.append(block.output_producer())
                for mid in block.mid_groups():
                    mid.name = f"stage{s}.block{b}.mid"
                    groups.append(mid)
            if group is not stream:
                groups.append(stream)
            stream = group
        stream.consumers.append(self.fc)
        groups.append(stream)
        return groups


_BASIC = dict(block="basic", expand_ratios=[0.35, 0.5, 0.75, 1.0], width_mults=[0.65, 0.8, 1.0],
              stem_mults=[0.8, 0.9, 1.0])

register_supernet("ofa_resnet_tiny", OFAResNet, **_BASIC, stage_channels=[32, 64, 112],
                  depths=[[1, 2], [1, 2], [1, 2]], strides=[2, 2, 2], stem_channels=32, stem_type="conv3",
                  resolutions=[16, 20, 24, 28, 32], in_chans=1, num_classes=10)
register_supernet("ofa_resnet18", OFAResNet, **_BASIC, stage_channels=[64, 128, 256, 512],
                  depths=[[1, 2]] * 4, strides=[1, 2, 2, 2], stem_channels=64, stem_type="conv7_pool",
                  resolutions=[128, 160, 192, 224])
register_supernet("ofa_resnet34", OFAResNet, **_BASIC, stage_channels=[64, 128, 256, 512],
                  depths=[[1, 2, 3], [2, 3, 4], [4, 5, 6], [1, 2, 3]], strides=[1, 2, 2, 2], stem_channels=64,
                  stem_type="conv7_pool", resolutions=[128, 160, 192, 224])
# The once-for-all ResNet-50 space: depth = base [2, 2, 4, 2] + {0, 1, 2}, expand {0.2, 0.25, 0.35},
# width {0.65, 0.8, 1.0}. Its largest arch is wider and deeper than a plain ResNet-50, by design.
register_supernet("ofa_resnet50", OFAResNet, block="bottleneck", stage_channels=[256, 512, 1024, 2048],
                  depths=[[2, 3, 4], [2, 3, 4], [4, 5, 6], [2, 3, 4]], strides=[1, 2, 2, 2], stem_channels=64,
                  stem_type="conv7_pool", expand_ratios=[0.2, 0.25, 0.35], width_mults=[0.65, 0.8, 1.0],
                  stem_mults=[0.8, 0.9, 1.0], resolutions=[128, 160, 192, 224])

