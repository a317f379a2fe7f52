"""The ResNet network layout (stem, stages of blocks, classifier), shared by the supernet and the dense network,
and the dense network ``OFAResNet.extract`` returns: plain layers named like timm's ResNet."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...factory import Layers
from ...static import StaticNet
from .blocks import BLOCKS, add_stem, run_stem


class ResNetLayout:
    """Builds and runs a ResNet from a dense spec; the supernet builds it from its largest arch's spec."""

    def build_layout(self, spec: dict[str, Any], layers: Layers) -> None:
        add_stem(self, spec["in_chans"], spec["stem"], spec["stem_type"], layers)
        block = BLOCKS[spec["block"]]
        self.stages: list[nn.Sequential] = []
        for s, stage in enumerate(spec["stages"]):
            layer = nn.Sequential(*(block(*b, layers=layers) for b in stage))
            self.add_module(f"layer{s + 1}", layer)
            self.stages.append(layer)
        self.fc = layers.linear(spec["stages"][-1][-1][2], spec["num_classes"])

    def run_layout(self, x: torch.Tensor, depths: Sequence[int]) -> torch.Tensor:
        x = run_stem(self, x)
        for layer, depth in zip(self.stages, depths):
            for block in islice(layer, depth):
                x = block(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class StaticResNet(ResNetLayout, StaticNet):
    family = "resnet"

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return [("conv1", "bn1")]  # the blocks name their own
