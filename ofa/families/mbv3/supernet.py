"""MobileNetV3 and EfficientNet supernets: elastic depth, expand ratio, depthwise kernel, width and resolution.

Module names equal timm's (``conv_stem``, ``bn1``, ``blocks.2.1.conv_dw``, ``blocks.2.1.se.conv_reduce``,
``conv_head``, ``classifier``), so a timm MobileNetV3/EfficientNet state dict loads into the supernet as is (see
:mod:`ofa.families.mbv3.timm`), and the largest arch computes what the timm model computes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...factory import DYNAMIC
from ...sorting import ChannelGroup
from ...space import Arch
from ...supernet import Supernet
from .blocks import DepthwiseSeparable
from .dense import MBConvLayout
from .plan import MBConvPlan


class OFAMobileNet(MBConvLayout, Supernet):
    """An elastic MobileNetV3 / EfficientNet: depth per stage, expand and kernel per block, width, resolution."""

    family = "mbv3"
    plan_class = MBConvPlan
    classifier_name = "classifier"
    config_keys = ("style", "stem_channels", "first_channels", "stage_channels", "depths", "strides",
                   "kernel_sizes", "expand_ratios", "acts", "se", "head_channels", "num_features", "resolutions",
                   "stem_act", "stem_stride", "first_kernel", "first_act", "first_se", "head_act", "mid_channels",
                   "width_mults", "stem_mults", "in_chans", "num_classes", "divisor", "data_config", "origin")

    def __init__(self, name: str | None = None, data_config: dict | None = None, origin: dict | None = None,
                 **config) -> None:
        config = self.checked_config(config)
        plan = MBConvPlan(**config)
        super().__init__(plan, config, name, data_config, origin)
        self.build_layout(plan.static_spec(plan.space.largest()), DYNAMIC, kernel_choices=plan.space.kernels)
        self._init_weights()
        self.set_active(self.active_arch)

    def _init_weights(self) -> None:
        # As timm's EfficientNet: normal with std sqrt(2 / fan_out), fan_out counting the groups.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def _apply_arch(self, arch: Arch) -> None:
        self.conv_stem.active_out = self.plan.stem_width(arch)
        first = self.plan.first_block(arch)
        self.blocks[0][0].set_channels(first.in_c, first.out, first.se)
        for layer, stage in zip(self.stages, self.plan.blocks(arch)):
            for block, b in zip(layer, stage):
                block.set_channels(b.mid, b.out, b.kernel, b.se)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_layout(x, self.active_arch.depths)

    def channel_groups(self) -> list[ChannelGroup]:
        """Every set of channels that must be permuted together, and the layers that read them.

        Middle channels carry their depthwise conv, its BN and the SE's expand outputs along (passthrough), and
        the SE's reduce conv reads them. SE's reduced channels are not sorted (they are sliced in stored order).
        """
        groups: list[ChannelGroup] = []
        first: DepthwiseSeparable = self.blocks[0][0]
        stem = ChannelGroup([(self.conv_stem, self.bn1)], [first.conv_pw], name="stem",
                            passthrough=[first.conv_dw, first.bn1])
        if first.se is not None:
            stem.passthrough.append(first.se.conv_expand)
            stem.consumers.append(first.se.conv_reduce)
        if self.plan.first_skip:  # the residual ties the first block's output to the stem
            stem.producers.append((first.conv_pw, first.bn2))
            stem.name = "stem+first"
            stream = stem
        else:
            groups.append(stem)
            stream = ChannelGroup([(first.conv_pw, first.bn2)], [], name="first")
        for s, layer in enumerate(self.stages):
            group = ChannelGroup([], [], name=f"stage{s}")
            for b, block in enumerate(layer):
                (stream if b == 0 else group).consumers.append(block.conv_pw)
                group.producers.append((block.conv_pwl, block.bn3))
                mid = block.mid_group()
                mid.name = f"stage{s}.block{b}.mid"
                groups.append(mid)
            groups.append(stream)
            stream = group
        stream.consumers.append(self.blocks[-1][0].conv if self.bn2 is None else self.conv_head)
        groups.append(stream)
        return groups

