"""Vision transformer supernets: elastic depth, embedding dimension, heads and MLP ratio per block, resolution.

Module names equal timm's ``VisionTransformer`` (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.3.attn.qkv``, ``norm``, ``head``), with one layout difference (QKV rows head-major, see
:mod:`ofa.families.vit.blocks`), so the largest arch computes what the timm model computes.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import OFAError
from ...factory import DYNAMIC
from ...layers import cached_eval_weight
from ...sorting import ChannelGroup, HeadGroup
from ...space import Arch
from ...supernet import Supernet
from .dense import ViTLayout
from .plan import ViTPlan


def resample_position(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """The position embedding (class token's entry first) for a ``grid`` x ``grid`` patch grid: timm's bicubic
    resampling of the stored grid; the stored tensor itself at its own grid."""
    stored = round((pos_embed.shape[1] - 1) ** 0.5)
    if grid == stored:
        return pos_embed
    from timm.layers import resample_abs_pos_embed

    return resample_abs_pos_embed(pos_embed, new_size=[grid, grid], old_size=[stored, stored], num_prefix_tokens=1)


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
        unknown = sorted(set(config) - set(self.config_keys))
        if unknown:
            raise OFAError(f"unknown argument {unknown[0]!r} for the vit family; allowed: {sorted(self.config_keys)}")
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
        plan = ViTPlan(**config)
        super().__init__(plan, config, name, data_config, origin)
        self.build_layout(plan.static_spec(plan.space.largest()), DYNAMIC)
        self._init_weights()
        self.set_active(self.active_arch)

    def _init_weights(self) -> None:
        # As timm's ViT: truncated normal (std 0.02) for linears and embeddings, zero biases, unit LayerNorms.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
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

    def class_and_position(self, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.patch_embed.proj.active_out
        pos = self.pos_embed
        if torch.is_grad_enabled() and pos.requires_grad:
            return self.cls_token[..., :k], resample_position(pos, grid)[..., :k]
        # Evaluation: resample (bicubic) and slice once per grid and width, not on every forward
        key = (grid, k, pos._version, pos.data_ptr(), pos.device, pos.dtype)
        return self.cls_token[..., :k], cached_eval_weight(
            self, "_position_cache", key, lambda: resample_position(pos, grid)[..., :k])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_layout(x, self.active_arch.depths)

    def export_to(self, dense: nn.Module) -> None:
        """Extraction's step for what is not a slice of a stored tensor: the position embedding of the dense
        network's own grid."""
        grid = dense.resolution // self.plan.patch_size
        dense.pos_embed.copy_(resample_position(self.pos_embed, grid)[..., :dense.pos_embed.shape[-1]])

    def channel_groups(self) -> list[ChannelGroup]:
        """The embedding channels (the residual stream: written by the patch embedding, every attention
        projection and MLP output, carried by the class token, position embedding and every LayerNorm, read by
        every QKV and first MLP layer and the head), each block's heads (moved whole) and MLP hidden channels."""
        embed = ChannelGroup([(self.patch_embed.proj, None)], [self.head], name="embed",
                             passthrough=[self.norm], embeddings=[self.cls_token, self.pos_embed])
        groups: list[ChannelGroup] = [embed]
        for b, block in enumerate(self.blocks):
            embed.producers += [(block.attn.proj, None), (block.mlp.fc2, None)]
            embed.consumers += [block.attn.qkv, block.mlp.fc1]
            embed.passthrough += [block.norm1, block.norm2]
            groups.append(HeadGroup([(block.attn.qkv, None)], [block.attn.proj], name=f"block{b}.heads",
                                    head_dim=self.plan.head_dim))
            groups.append(ChannelGroup([(block.mlp.fc1, None)], [block.mlp.fc2], name=f"block{b}.mlp"))
        return groups
