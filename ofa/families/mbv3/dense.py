"""The MobileNetV3/EfficientNet layout (stem, first block, MBConv stages, head), shared by the supernet and the
dense network, and the dense network ``OFAMobileNet.extract`` returns: plain layers named like timm's."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from typing import Any

import torch
from torch import nn

from ...factory import Layers
from ...static import StaticNet
from .blocks import ConvBnAct, DepthwiseSeparable, InvertedResidual, make_act


def run_head(x: torch.Tensor, final: nn.Module | None, conv_head: nn.Module, bn2: nn.Module | None,
             act2: nn.Module, classifier: nn.Module) -> torch.Tensor:
    if bn2 is None:  # MobileNetV3: final expand, pool, conv_head with bias
        x = final(x).mean((2, 3), keepdim=True)
        x = act2(conv_head(x)).flatten(1)
    else:  # EfficientNet: conv_head + BN, pool
        x = act2(bn2(conv_head(x))).mean((2, 3))
    return classifier(x)


class MBConvLayout:
    """Builds and runs the network of a dense spec; the supernet builds it from its largest arch's spec with the
    elastic kernel choices of each stage."""

    def build_layout(self, spec: dict[str, Any], layers: Layers,
                     kernel_choices: Sequence[Sequence[int]] | None = None) -> None:
        se_args = (spec["se_act"], spec["se_gate"])
        stem, stem_stride, stem_act = spec["stem"]
        self.conv_stem = layers.conv(spec["in_chans"], stem, 3, stem_stride)
        self.bn1 = layers.bn(stem)
        self.act1 = make_act(stem_act)
        stages = [nn.Sequential(DepthwiseSeparable(*spec["first"], *se_args, layers=layers))]
        for s, stage in enumerate(spec["stages"]):
            kernels = [b[3] if kernel_choices is None else list(kernel_choices[s]) for b in stage]
            stages.append(nn.Sequential(*(InvertedResidual(*b[:3], k, *b[4:], *se_args, layers=layers)
                                          for b, k in zip(stage, kernels))))
        head, features, head_act = spec["head"]
        last = spec["stages"][-1][-1][2]
        if spec["style"] == "mobilenetv3":
            stages.append(nn.Sequential(ConvBnAct(last, head, head_act, layers)))
            self.conv_head = layers.conv(head, features, 1, bias=True)
            self.bn2 = None
        else:
            self.conv_head = layers.conv(last, head, 1)
            self.bn2 = layers.bn(head)
            features = head
        self.blocks = nn.Sequential(*stages)
        self.stages: list[nn.Sequential] = list(self.blocks)[1:1 + len(spec["stages"])]
        self.act2 = make_act(head_act)
        self.classifier = layers.linear(features, spec["num_classes"])

    def run_layout(self, x: torch.Tensor, depths: Sequence[int]) -> torch.Tensor:
        x = self.blocks[0](self.act1(self.bn1(self.conv_stem(x))))
        for layer, depth in zip(self.stages, depths):
            for block in islice(layer, depth):
                x = block(x)
        final = self.blocks[-1] if self.bn2 is None else None
        return run_head(x, final, self.conv_head, self.bn2, self.act2, self.classifier)


class StaticMBConvNet(MBConvLayout, StaticNet):
    family = "mbv3"

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return [("conv_stem", "bn1")] + ([("conv_head", "bn2")] if self.bn2 is not None else [])
