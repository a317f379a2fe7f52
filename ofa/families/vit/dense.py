"""The vision transformer layout (patch embedding, class token, position embedding, blocks, norm, head), shared
by the supernet and the dense network, and the dense network ``OFAViT.extract`` returns."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from typing import Any

import torch
from torch import nn

from ...factory import Layers
from ...static import StaticNet
from .blocks import Block, PatchEmbed


class ViTLayout:
    """Builds and runs the network of a dense spec."""

    def build_layout(self, spec: dict[str, Any], layers: Layers) -> None:
        k, grid = spec["embed"], spec["resolution"] // spec["patch"]
        self.patch_embed = PatchEmbed(spec["in_chans"], k, spec["patch"], layers)
        self.tokens = layers.tokens(grid * grid + 1, k)  # class token and position embedding
        self.blocks = nn.Sequential(*(Block(k, heads, spec["head_dim"], hidden, spec["qkv_bias"], spec["eps"],
                                            layers) for heads, hidden in spec["blocks"]))
        self.norm = layers.layer_norm(k, spec["eps"])
        self.head = layers.linear(k, spec["num_classes"])

    def run_layout(self, x: torch.Tensor, depths: Sequence[int]) -> torch.Tensor:
        x = self.tokens(self.patch_embed(x))
        for block in islice(self.blocks, depths[0]):
            x = block(x)
        return self.head(self.norm(x)[:, 0])


class StaticViT(ViTLayout, StaticNet):
    family = "vit"

    def stage_depths(self) -> list[int]:
        return [len(self.spec["blocks"])]

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return []  # LayerNorm normalises each token by its own statistics: nothing to fold
