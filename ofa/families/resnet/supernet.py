"""ResNet supernets (basic and bottleneck blocks), named and structured like timm's ResNet.

Module names equal timm's (``conv1``, ``bn1``, ``layer1.0.conv2``, ``layer2.0.downsample.0``, ``fc``), so a timm
ResNet's state dict loads into the supernet as is, and the largest arch computes what the timm model computes.
"""

from __future__ import annotations

import torch
from torch import nn

from ...factory import DYNAMIC
from ...sorting import ChannelGroup
from ...space import Arch
from ...supernet import Supernet
from .dense import ResNetLayout
from .plan import ResNetPlan


class OFAResNet(ResNetLayout, Supernet):
    """An elastic ResNet: depth per stage, width per stage (residual stream), expand per block, resolution."""

    family = "resnet"
    plan_class = ResNetPlan
    classifier_name = "fc"
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
        self.build_layout(plan.static_spec(plan.space.largest()), DYNAMIC)
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

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_layout(x, self.active_arch.depths)

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
