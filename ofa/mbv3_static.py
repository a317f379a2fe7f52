"""The dense MobileNetV3/EfficientNet that ``OFAMobileNet.extract`` returns: plain layers named like timm's."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .mbv3_blocks import ConvBnAct, SqueezeExcite, make_act
from .registry import register_static
from .static import StaticNet


class DepthwiseSeparable(nn.Module):
    def __init__(self, in_c: int, mid: int, out: int, kernel: int, stride: int, se: int, act: str, skip: bool,
                 se_act: str | None, se_gate: str) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(in_c, in_c, kernel, stride, kernel // 2, groups=in_c, bias=False)
        self.bn1 = nn.BatchNorm2d(in_c)
        self.act1 = make_act(act)
        self.se = SqueezeExcite(in_c, se, se_act or act, se_gate) if se else None
        self.conv_pw = nn.Conv2d(in_c, out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.has_skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv_dw(x)))
        if self.se is not None:
            x = self.se(x)
        x = self.bn2(self.conv_pw(x))
        return x + shortcut if self.has_skip else x


class InvertedResidual(nn.Module):
    def __init__(self, in_c: int, mid: int, out: int, kernel: int, stride: int, se: int, act: str, skip: bool,
                 se_act: str | None, se_gate: str) -> None:
        super().__init__()
        self.conv_pw = nn.Conv2d(in_c, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = make_act(act)
        self.conv_dw = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = make_act(act)
        self.se = SqueezeExcite(mid, se, se_act or act, se_gate) if se else None
        self.conv_pwl = nn.Conv2d(mid, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.has_skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv_pw(x)))
        x = self.act2(self.bn2(self.conv_dw(x)))
        if self.se is not None:
            x = self.se(x)
        x = self.bn3(self.conv_pwl(x))
        return x + shortcut if self.has_skip else x


@register_static
class StaticMBConvNet(StaticNet):
    family = "mbv3"

    def __init__(self, description: dict[str, Any]) -> None:
        super().__init__(description)
        spec = self.spec
        se_args = (spec["se_act"], spec["se_gate"])
        stem, stem_stride, stem_act = spec["stem"]
        self.conv_stem = nn.Conv2d(spec["in_chans"], stem, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.act1 = make_act(stem_act)
        stages = [nn.Sequential(DepthwiseSeparable(*spec["first"], *se_args))]
        stages += [nn.Sequential(*(InvertedResidual(*b, *se_args) for b in stage)) for stage in spec["stages"]]
        head, features, head_act = spec["head"]
        last = spec["stages"][-1][-1][2]
        self.mobilenetv3 = spec["style"] == "mobilenetv3"
        if self.mobilenetv3:
            stages.append(nn.Sequential(ConvBnAct(last, head, head_act, dynamic=False)))
            self.conv_head = nn.Conv2d(head, features, 1)
            self.bn2 = None
        else:
            self.conv_head = nn.Conv2d(last, head, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(head)
            features = head
        self.blocks = nn.Sequential(*stages)
        self.act2 = make_act(head_act)
        self.classifier = nn.Linear(features, spec["num_classes"])

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """Qualified names of every (convolution, the BatchNorm right after it) pair, for BN folding: timm's block
        names do not pair by number (``conv_pw``/``bn1``, ``conv_dw``/``bn2``, ``conv_pwl``/``bn3``)."""
        pairs = [("conv_stem", "bn1"), ("blocks.0.0.conv_dw", "blocks.0.0.bn1"), ("blocks.0.0.conv_pw", "blocks.0.0.bn2")]
        for s, stage in enumerate(self.blocks):
            for b, block in enumerate(stage):
                p = f"blocks.{s}.{b}."
                if isinstance(block, InvertedResidual):
                    pairs += [(p + "conv_pw", p + "bn1"), (p + "conv_dw", p + "bn2"), (p + "conv_pwl", p + "bn3")]
                elif isinstance(block, ConvBnAct):
                    pairs.append((p + "conv", p + "bn1"))
        if self.bn2 is not None:
            pairs.append(("conv_head", "bn2"))
        return pairs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        return x if self.bn2 is None else self.act2(self.bn2(self.conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        if self.mobilenetv3:
            x = self.act2(self.conv_head(x.mean((2, 3), keepdim=True))).flatten(1)
        else:
            x = x.mean((2, 3))
        return self.classifier(x)
