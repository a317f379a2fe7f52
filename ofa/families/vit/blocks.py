"""Transformer blocks, written once: a layer factory makes them elastic (supernet) or plain (extracted network).

Module names equal timm's ``VisionTransformer`` blocks (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``,
``mlp.fc1``, ``mlp.fc2``). One layout differs: the rows of ``attn.qkv`` are ordered head by head (head ``i``'s
query, key and value rows together), not timm's all queries, then all keys, then all values. So the first ``h``
heads are the first ``3 * h * head_dim`` rows: keeping heads is slicing a prefix, as for every other width, and
sorting heads moves whole row blocks. The timm importer permutes the rows once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...factory import STATIC, Layers


class Attention(nn.Module):
    """Multi-head self-attention over ``heads`` heads of ``head_dim`` channels (QKV rows head-major)."""

    def __init__(self, embed: int, heads: int, head_dim: int, qkv_bias: bool, layers: Layers = STATIC) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.scale = head_dim ** -0.5
        self.qkv = layers.linear(embed, 3 * heads * head_dim, bias=qkv_bias)
        self.proj = layers.linear(heads * head_dim, embed)
        # scaled_dot_product_attention is faster; the explicit products are what FLOP counters and old ONNX
        # exporters see (tests switch it off to count QKᵀ and attention·V).
        self.fused_attn = True

    def set_channels(self, embed: int, heads: int) -> None:
        self.qkv.active_out = 3 * heads * self.head_dim
        self.proj.active_out = embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, -1, 3, self.head_dim).permute(3, 0, 2, 1, 4).unbind(0)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            x = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    """Linear, GELU, linear over ``hidden`` channels."""

    def __init__(self, embed: int, hidden: int, layers: Layers = STATIC) -> None:
        super().__init__()
        self.fc1 = layers.linear(embed, hidden)
        self.act = nn.GELU()
        self.fc2 = layers.linear(hidden, embed)

    def set_channels(self, embed: int, hidden: int) -> None:
        self.fc1.active_out = hidden
        self.fc2.active_out = embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, embed: int, heads: int, head_dim: int, hidden: int, qkv_bias: bool, eps: float,
                 layers: Layers = STATIC) -> None:
        super().__init__()
        self.norm1 = layers.layer_norm(embed, eps)
        self.attn = Attention(embed, heads, head_dim, qkv_bias, layers)
        self.norm2 = layers.layer_norm(embed, eps)
        self.mlp = Mlp(embed, hidden, layers)

    def set_channels(self, embed: int, heads: int, hidden: int) -> None:
        self.attn.set_channels(embed, heads)
        self.mlp.set_channels(embed, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: ``(N, C, H, W)`` to ``(N, H/p * W/p, embed)``."""

    def __init__(self, in_chans: int, embed: int, patch: int, layers: Layers = STATIC) -> None:
        super().__init__()
        self.proj = layers.patch_conv(in_chans, embed, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)
