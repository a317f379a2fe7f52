"""Vision transformer supernets: elastic depth, embedding dimension, heads and MLP ratio per block, resolution.

Module names equal timm's ``VisionTransformer`` (``patch_embed.proj``, ``blocks.3.attn.qkv``, ``norm``, ``head``)
but for two differences: the class token and position embedding live in one layer (``tokens.cls_token``,
``tokens.pos_embed``: :mod:`ofa.tokens`) and QKV rows are head-major (:mod:`ofa.families.vit.blocks`). The timm
importer maps both, so the largest arch computes what the timm model computes.
"""

from __future__ import annotations

import torch
from torch import nn

from ...factory import DYNAMIC
from ...sorting import ChannelGroup, HeadGroup
from ...space import Arch
from ...supernet import Supernet
from .dense import ViTLayout
from .plan import ViTPlan


class OFAViT(ViTLayout, Supernet):
    """An elastic vision transformer: depth, embedding width, heads and MLP ratio per block, resolution."""

    family = "vit"
    plan_class = ViTPlan
    classifier_name = "head"
    config_keys = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "resolutions", "depths",
                   "embed_mults", "head_choices", "mlp_ratios", "qkv_bias", "in_chans", "num_classes", "divisor",
                   "eps", "data_config", "origin")

    def __init__(self, name: str | None = None, data_config: dict | None = None, origin: dict | None = None,
                 **config) -> None:
        config = self.checked_config(config)
        plan = ViTPlan(**config)
        super().__init__(plan, config, name, data_config, origin)
        self.build_layout(plan.static_spec(plan.space.largest()), DYNAMIC)
        self._init_weights()
        self.set_active(self.active_arch)

    def _init_weights(self) -> None:
        # As timm's ViT: truncated normal (std 0.02) for linears and embeddings, zero biases, unit LayerNorms.
        nn.init.trunc_normal_(self.tokens.pos_embed, std=0.02)
        nn.init.normal_(self.tokens.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _apply_arch(self, arch: Arch) -> None:
        k = self.plan.embed(arch.widths[0])
        self.patch_embed.proj.active_out = k
        for block, (heads, hidden) in zip(self.blocks, self.plan.blocks(arch)):
            block.set_channels(k, heads, hidden)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_layout(x, self.active_arch.depths)

    def channel_groups(self) -> list[ChannelGroup]:
        """The embedding channels (the residual stream: written by the patch embedding, every attention
        projection and MLP output, carried by the class token, position embedding and every LayerNorm, read by
        every QKV and first MLP layer and the head), each block's heads (moved whole) and MLP hidden channels."""
        embed = ChannelGroup([(self.patch_embed.proj, None)], [self.head], name="embed",
                             passthrough=[self.norm], embeddings=[self.tokens.cls_token, self.tokens.pos_embed])
        groups: list[ChannelGroup] = [embed]
        for b, block in enumerate(self.blocks):
            embed.producers += [(block.attn.proj, None), (block.mlp.fc2, None)]
            embed.consumers += [block.attn.qkv, block.mlp.fc1]
            embed.passthrough += [block.norm1, block.norm2]
            groups.append(HeadGroup([(block.attn.qkv, None)], [block.attn.proj], name=f"block{b}.heads",
                                    head_dim=self.plan.head_dim))
            groups.append(ChannelGroup([(block.mlp.fc1, None)], [block.mlp.fc2], name=f"block{b}.mlp"))
        return groups
