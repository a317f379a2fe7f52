"""The dense ResNet that ``OFAResNet.extract`` returns: plain layers named like timm's ResNet."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_static
from .static import StaticNet


class BasicBlock(nn.Module):
    def __init__(self, in_c: int, mid: int, out: int, stride: int, downsample: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(nn.Conv2d(in_c, out, 1, stride, bias=False), nn.BatchNorm2d(out)) \
            if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class Bottleneck(nn.Module):
    def __init__(self, in_c: int, mid: int, out: int, stride: int, downsample: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(mid, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(nn.Conv2d(in_c, out, 1, stride, bias=False), nn.BatchNorm2d(out)) \
            if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act3(x + shortcut)


@register_static
class StaticResNet(StaticNet):
    family = "resnet"

    def __init__(self, description: dict[str, Any]) -> None:
        super().__init__(description)
        spec = self.spec
        stem = spec["stem"]
        if spec["stem_type"] == "conv7_pool":
            self.conv1 = nn.Conv2d(spec["in_chans"], stem, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(spec["in_chans"], stem, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(stem)
        self.act1 = nn.ReLU(inplace=True)
        block = Bottleneck if spec["block"] == "bottleneck" else BasicBlock
        self.stage_names = []
        for s, stage in enumerate(spec["stages"]):
            self.stage_names.append(f"layer{s + 1}")
            self.add_module(f"layer{s + 1}", nn.Sequential(*(block(*b) for b in stage)))
        self.fc = nn.Linear(spec["stages"][-1][-1][2], spec["num_classes"])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.forward_features(x), 1).flatten(1))
