"""The vision transformer family: elastic depth, embedding width, heads and MLP ratio per block, resolution."""

from __future__ import annotations

from ...registry import register_family, register_supernet
from .dense import StaticViT
from .family import ViTFamily
from .plan import ViTPlan
from .supernet import OFAViT

__all__ = ["OFAViT", "StaticViT", "ViTFamily", "ViTPlan"]

register_family(ViTFamily())

# A small ViT for 28-32 px digits on a CPU: 4 px patches (an 8x8 grid at 32 px), 6 blocks of 4 heads of 16.
register_supernet("ofa_vit_tiny", OFAViT, patch_size=4, embed_dim=64, depth=6, num_heads=4, mlp_ratio=2.0,
                  resolutions=[24, 28, 32], depths=[4, 5, 6], embed_mults=[0.75, 1.0], head_choices=[2, 3, 4],
                  mlp_ratios=[1.0, 1.5, 2.0], in_chans=1, num_classes=10)
# ViT-Tiny/16 (DeiT-Tiny's structure) at 224 px, the once-for-all style choices around it.
register_supernet("ofa_vit_t16", OFAViT, patch_size=16, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0,
                  resolutions=[160, 192, 224], depths=[10, 11, 12], embed_mults=[0.75, 1.0], head_choices=[2, 3],
                  mlp_ratios=[2.0, 3.0, 4.0])
