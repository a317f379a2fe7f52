"""MobileNetV3 and EfficientNet supernets: elastic depth, expand ratio, depthwise kernel, width and resolution.

Module names equal timm's (``conv_stem``, ``bn1``, ``blocks.2.1.conv_dw``, ``blocks.2.1.se.conv_reduce``,
``conv_head``, ``classifier``), so a timm MobileNetV3/EfficientNet state dict loads into the supernet as is (see
:mod:`ofa.timm_mbv3`), and the largest arch computes what the timm model computes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from .kernel import DynamicKernelConv2d
from .layers import DynamicBatchNorm2d, DynamicConv2d
from .mbv3_blocks import ConvBnAct, DynamicDepthwiseSeparable, DynamicInvertedResidual, make_act
from .mbv3_plan import MBConvPlan
from .mbv3_static import StaticMBConvNet  # noqa: F401  (registers the dense counterpart)
from .registry import register_family, register_supernet
from .sorting import ChannelGroup
from .space import Arch
from .supernet import Supernet


@register_family
class OFAMobileNet(Supernet):
    """An elastic MobileNetV3 / EfficientNet: depth per stage, expand and kernel per block, width, resolution."""

    family = "mbv3"
    plan_class = MBConvPlan
    config_keys = ("style", "stem_channels", "first_channels", "stage_channels", "depths", "strides",
                   "kernel_sizes", "expand_ratios", "acts", "se", "head_channels", "num_features", "resolutions",
                   "stem_act", "stem_stride", "first_kernel", "first_act", "first_se", "head_act", "mid_channels",
                   "width_mults", "stem_mults", "in_chans", "num_classes", "divisor", "data_config", "origin")

    def __init__(self, name: str | None = None, data_config: dict | None = None, origin: dict | None = None,
                 **config) -> None:
        unknown = sorted(set(config) - set(self.config_keys))
        if unknown:
            from .errors import OFAError

            raise OFAError(f"unknown argument {unknown[0]!r} for the mbv3 family; allowed: {sorted(self.config_keys)}")
        config = _jsonable(config)
        plan = MBConvPlan(**config)
        super().__init__(plan, config, name, data_config, origin)
        largest = plan.space.largest()
        rules = plan.rules
        stem = plan.stem_width(largest)
        self.conv_stem = DynamicConv2d(plan.in_chans, stem, 3, plan.stem_stride)
        self.bn1 = DynamicBatchNorm2d(stem)
        self.act1 = make_act(plan.stem_act)
        first = plan.first_block(largest)
        stages = [nn.Sequential(DynamicDepthwiseSeparable(first.in_c, first.out, first.kernel, first.se, first.act,
                                                          rules["se_act"], rules["se_gate"], first.skip))]
        for s, stage in enumerate(plan.blocks(largest)):
            stages.append(nn.Sequential(*(
                DynamicInvertedResidual(b.in_c, b.mid, b.out, plan.space.kernels[s], b.stride, b.se, b.act,
                                        rules["se_act"], rules["se_gate"], b.skip) for b in stage)))
        last = plan.stage_channels[-1]
        if plan.style == "mobilenetv3":
            stages.append(nn.Sequential(ConvBnAct(last, plan.head_channels, plan.head_act)))
        self.blocks = nn.Sequential(*stages)
        if plan.style == "mobilenetv3":
            self.conv_head = nn.Conv2d(plan.head_channels, plan.num_features, 1)
            self.bn2 = None
            features = plan.num_features
        else:
            self.conv_head = DynamicConv2d(last, plan.head_channels, 1)
            self.bn2 = DynamicBatchNorm2d(plan.head_channels)
            features = plan.head_channels
        self.act2 = make_act(plan.head_act)
        self.classifier = nn.Linear(features, plan.num_classes)
        self._init_weights()
        self.set_active(self.active_arch)

    @property
    def stages(self) -> list[nn.Sequential]:
        """The elastic MBConv stages (the search space's stages)."""
        return list(self.blocks)[1:1 + self.space.num_stages]

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
        self.blocks[0][0].set_channels(first.out, first.se)
        for layer, stage in zip(self.stages, self.plan.blocks(arch)):
            for block, b in zip(layer, stage):
                block.set_channels(b.mid, b.out, b.kernel, b.se)
        self._depths = arch.depths

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks[0](self.act1(self.bn1(self.conv_stem(x))))
        for layer, depth in zip(self.stages, self._depths):
            for block in layer[:depth]:
                x = block(x)
        if self.bn2 is None:  # MobileNetV3: final expand, pool, conv_head with bias
            x = self.blocks[-1](x).mean((2, 3), keepdim=True)
            x = self.act2(self.conv_head(x)).flatten(1)
        else:  # EfficientNet: conv_head + BN, pool
            x = self.act2(self.bn2(self.conv_head(x))).mean((2, 3))
        return self.classifier(x)

    # -- extraction: fold the kernel transformations into plain depthwise weights ----------------------------
    def extract(self, arch: Arch | Mapping | None = None, calib_batches: Iterable | None = None,
                num_batches: int | None = None) -> nn.Module:
        arch = self.active_arch if arch is None else self.space.validate(arch)
        static = super().extract(arch)
        with torch.no_grad():
            for s, depth in enumerate(arch.depths):
                for b in range(depth):
                    target = static.blocks[s + 1][b].conv_dw.weight
                    source: DynamicKernelConv2d = self.stages[s][b].conv_dw
                    target.copy_(source.kernel_weight(arch.kernels[s][b], target.shape[0]))
        if calib_batches is not None:
            from .bn import calibrate_bn

            calibrate_bn(static, calib_batches, num_batches=num_batches)
        return static

    def channel_groups(self) -> list[ChannelGroup]:
        """Every set of channels that must be permuted together, and the layers that read them.

        Middle channels carry their depthwise conv, its BN and the SE's expand outputs along (passthrough), and
        the SE's reduce conv reads them. SE's reduced channels are not sorted (they are sliced in stored order).
        """
        groups: list[ChannelGroup] = []
        first: DynamicDepthwiseSeparable = self.blocks[0][0]
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


def _jsonable(config: dict) -> dict:
    """Tuples become lists, so the recorded config equals what JSON gives back."""
    def convert(v):
        return [convert(x) for x in v] if isinstance(v, (list, tuple)) else v
    return {k: convert(v) for k, v in config.items()}


# The once-for-all MobileNetV3 space: stem 16, a fixed depthwise-separable first block, five MBConv stages
# (24, 40, 80, 112, 160; SE in stages 1, 3, 4; ReLU then hard-swish), final expand 960 and a 1280 head.
_OFA_MBV3 = dict(style="mobilenetv3", stem_channels=16, first_channels=16, strides=[2, 2, 2, 1, 2],
                 kernel_sizes=[3, 5, 7], expand_ratios=[3, 4, 6], acts=["relu", "relu", "hswish", "hswish", "hswish"],
                 se=[False, True, False, True, True], depths=[[2, 3, 4]] * 5)

register_supernet("ofa_mbv3", OFAMobileNet, **_OFA_MBV3, stage_channels=[24, 40, 80, 112, 160], head_channels=960,
                  num_features=1280, resolutions=[128, 160, 192, 224])
# The same structure for 28-32 px inputs on a CPU: stride-1 first stage, stem 8, narrower stages and head.
register_supernet("ofa_mbv3_tiny", OFAMobileNet, **dict(_OFA_MBV3, strides=[1, 2, 2, 1, 2], stem_channels=8,
                                                         first_channels=8),
                  stage_channels=[16, 24, 32, 48, 64], head_channels=256, num_features=384,
                  resolutions=[24, 28, 32], in_chans=1, num_classes=10)
