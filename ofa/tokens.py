"""The class token and position embedding of a vision transformer, as a layer of their own.

``Tokens`` prepends the class token to the patch tokens and adds the position embedding (its first entry is the
class token's). ``DynamicTokens`` runs at the active embedding width (the patch tokens' channels) and at any patch
grid: the stored position embedding is resampled bicubically (timm's ``resample_abs_pos_embed``) from its own grid,
so extraction writes the resampled table into the dense network (``export_to``) and a dense network carries no
interpolation.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import cached_eval_weight


def resample_position(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """The position embedding (class token's entry first) for a ``grid`` x ``grid`` patch grid; the stored tensor
    itself at its own grid."""
    stored = round((pos_embed.shape[1] - 1) ** 0.5)
    if grid == stored:
        return pos_embed
    from timm.layers import resample_abs_pos_embed

    return resample_abs_pos_embed(pos_embed, new_size=[grid, grid], old_size=[stored, stored], num_prefix_tokens=1)


class Tokens(nn.Module):
    """Class token (``cls_token``, ``(1, 1, C)``) and position embedding (``pos_embed``, ``(1, tokens, C)``)."""

    def __init__(self, tokens: int, channels: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, channels))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, channels))

    def embeddings(self, grid: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_token, self.pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, grid², C)`` patch tokens to ``(N, grid² + 1, C)`` tokens."""
        cls, pos = self.embeddings(round(x.shape[1] ** 0.5), x.shape[-1])
        return torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1) + pos


class DynamicTokens(Tokens):
    """Tokens at the first ``C`` channels of the input and any grid (the position embedding resampled)."""

    def embeddings(self, grid: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        cls, pos = self.cls_token[..., :channels], self.pos_embed
        if torch.is_grad_enabled() and pos.requires_grad:
            return cls, resample_position(pos, grid)[..., :channels]
        # Evaluation: resample and slice once per grid and width, not on every forward
        key = (grid, channels, pos._version, pos.data_ptr(), pos.device, pos.dtype)
        return cls, cached_eval_weight(self, "_position_cache", key,
                                       lambda: resample_position(pos, grid)[..., :channels])

    def export_to(self, dense: Tokens) -> None:
        """Extraction: the dense layer's class token and its grid's position embedding, at its width."""
        channels, tokens = dense.pos_embed.shape[-1], dense.pos_embed.shape[1]
        dense.cls_token.copy_(self.cls_token[..., :channels])
        dense.pos_embed.copy_(resample_position(self.pos_embed, round((tokens - 1) ** 0.5))[..., :channels])
