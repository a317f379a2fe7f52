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
    """Builds and runs the network of a dense spec. ``tokens_prefix(x)`` gives the class token and position
    embedding for the running width and grid (the dense network's own; the supernet's sliced and resampled)."""

    def build_layout(self, spec: dict[str, Any], layers: Layers) -> None:
        k, grid = spec["embed"], spec["resolution"] // spec["patch"]
        self.patch_embed = PatchEmbed(spec["in_chans"], k, spec["patch"], layers)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, k))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, k))
        self.blocks = nn.Sequential(*(Block(k, heads, spec["head_dim"], hidden, spec["qkv_bias"], spec["eps"],
                                            layers) for heads, hidden in spec["blocks"]))
        self.norm = layers.layer_norm(k, spec["eps"])
        self.head = layers.linear(k, spec["num_classes"])

    def class_and_position(self, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_token, self.pos_embed

    def run_layout(self, x: torch.Tensor, depths: Sequence[int]) -> torch.Tensor:
        grid = x.shape[-1] // self.patch_embed.proj.kernel_size[0]
        x = self.patch_embed(x)
        cls, pos = self.class_and_position(grid)
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1) + pos
        for block in islice(self.blocks, depths[0]):
            x = block(x)
        return self.head(self.norm(x)[:, 0])


class StaticViT(ViTLayout, StaticNet):
    family = "vit"

    def stage_depths(self) -> list[int]:
        return [len(self.spec["blocks"])]

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return []  # LayerNorm normalises each token by its own statistics: nothing to fold
