"""The vision transformer family's hooks: its classes, its timed latency units and its timm importer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ...factory import STATIC
from ...family import Family
from . import timm as vit_timm
from .blocks import Block, PatchEmbed
from .dense import StaticViT
from .supernet import OFAViT


class Embed(nn.Module):
    """The patch embedding, class token and position embedding as a unit of their own (named as in the network)."""

    def __init__(self, in_chans: int, embed: int, patch: int, grid: int) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, embed, patch)
        self.tokens = STATIC.tokens(grid * grid + 1, embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(self.patch_embed(x))


class Head(nn.Module):
    """The final norm and the linear head on the class token as a unit of their own."""

    def __init__(self, embed: int, num_classes: int, eps: float) -> None:
        super().__init__()
        self.norm = STATIC.layer_norm(embed, eps)
        self.head = STATIC.linear(embed, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x)[:, 0])


class ViTFamily(Family, name="vit", supernet=OFAViT, dense=StaticViT, timm=vit_timm):
    def latency_units(self, spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Embedding, every block, head. A key names every shape that changes the unit's time: embedding width,
        heads, MLP width and token count."""
        k, grid = spec["embed"], spec["resolution"] // spec["patch"]
        common = {"embed": k, "grid": grid, "eps": spec["eps"]}
        units = [(f"embed|{spec['in_chans']}|{spec['patch']}|{k}|{grid}",
                  {"kind": "embed", "in_chans": spec["in_chans"], "patch": spec["patch"], **common})]
        for heads, hidden in spec["blocks"]:
            units.append((f"block|{k}|{heads}|{spec['head_dim']}|{hidden}|{int(spec['qkv_bias'])}|{grid}",
                          {"kind": "block", "heads": heads, "head_dim": spec["head_dim"], "hidden": hidden,
                           "qkv_bias": spec["qkv_bias"], **common}))
        units.append((f"head|{k}|{spec['num_classes']}|{grid}",
                      {"kind": "head", "num_classes": spec["num_classes"], **common}))
        return units

    def build_unit(self, unit: Mapping[str, Any]) -> tuple[nn.Module, tuple[int, ...]]:
        kind, k, grid = unit["kind"], unit["embed"], unit["grid"]
        if kind == "embed":
            size = grid * unit["patch"]
            return Embed(unit["in_chans"], k, unit["patch"], grid), (unit["in_chans"], size, size)
        shape = (grid * grid + 1, k)  # tokens: (N, tokens, embed) inputs
        if kind == "block":
            return Block(k, unit["heads"], unit["head_dim"], unit["hidden"], unit["qkv_bias"], unit["eps"]), shape
        return Head(k, unit["num_classes"], unit["eps"]), shape
