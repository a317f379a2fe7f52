"""The vision transformer family's architecture definition, without tensors.

A network of this family is a patch embedding (a ``patch`` x ``patch`` convolution with stride ``patch``), a class
token and a learned absolute position embedding, pre-norm transformer blocks (LayerNorm, multi-head attention,
LayerNorm, GELU MLP, each with a residual) and a final LayerNorm before a linear head on the class token: timm's
``VisionTransformer`` with ``class_token=True`` and ``global_pool="token"``.

Definitions (documented in README):
- One stage. ``depths[0]`` keeps the first ``d`` blocks.
- ``widths[0]`` multiplies the embedding dimension: the residual stream, shared by the patch embedding, the class
  token, the position embedding, every block's LayerNorms, attention output and MLP output, the final norm and
  the head. LayerNorm normalises over the active channels.
- ``heads[0][b]`` keeps the first ``h`` attention heads of block ``b``; the head dimension stays fixed.
- ``expands[0][b]`` scales block ``b``'s MLP hidden size by ``ratio / max(ratio choices)`` (the choices read as
  MLP ratios, e.g. {2, 3, 4}).
- ``resolution`` is a multiple of the patch size; the position embedding's grid is resampled (bicubic, as timm's
  ``resample_abs_pos_embed``) from the largest resolution's grid.
- Channel counts are rounded to a multiple of ``divisor`` and never exceed the maximum; choices that round to the
  same counts are one choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import OFAError
from ...layers import make_divisible
from ...space import Arch, SearchSpace, dedupe_choices


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise OFAError(f"{name} must be a positive integer, got {value!r}")
    return value


class ViTPlan:
    """Search space, channel counts, static spec and costs of a vision transformer supernet's arguments."""

    def __init__(self, patch_size: int, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 resolutions: Sequence[int], depths: Sequence[int] | None = None,
                 embed_mults: Sequence[float] = (1.0,), head_choices: Sequence[int] | None = None,
                 mlp_ratios: Sequence[float] | None = None, qkv_bias: bool = True, in_chans: int = 3,
                 num_classes: int = 1000, divisor: int = 8, eps: float = 1e-6) -> None:
        for name, value in (("patch_size", patch_size), ("embed_dim", embed_dim), ("depth", depth),
                            ("num_heads", num_heads), ("in_chans", in_chans), ("num_classes", num_classes),
                            ("divisor", divisor)):
            _positive_int(name, value)
        if embed_dim % num_heads:
            raise OFAError(f"embed_dim {embed_dim} must be a multiple of num_heads {num_heads}")
        if not resolutions or any(not isinstance(r, int) or r < patch_size or r % patch_size for r in resolutions):
            raise OFAError(f"resolutions must be multiples of the patch size {patch_size}, got {list(resolutions)!r}")
        depths = [depth] if depths is None else list(depths)
        if any(not isinstance(d, int) or not 1 <= d <= depth for d in depths):
            raise OFAError(f"depths must be block counts in 1..{depth}, got {depths!r}")
        head_choices = [num_heads] if head_choices is None else list(head_choices)
        if any(not isinstance(h, int) or not 1 <= h <= num_heads for h in head_choices):
            raise OFAError(f"head_choices must be head counts in 1..{num_heads}, got {head_choices!r}")
        ratios = sorted(set(float(m) for m in (mlp_ratios if mlp_ratios is not None else [mlp_ratio])))
        if ratios[0] <= 0 or ratios[-1] > mlp_ratio:
            raise OFAError(f"mlp_ratios must be in (0, mlp_ratio={mlp_ratio}], got {list(mlp_ratios or [])!r}")
        if not embed_mults or any(not 0 < float(m) <= 1 for m in embed_mults):
            raise OFAError(f"embed_mults must be in (0, 1], got {list(embed_mults)!r}")
        self.patch_size, self.embed_dim, self.depth, self.num_heads = patch_size, embed_dim, depth, num_heads
        self.head_dim = embed_dim // num_heads
        self.hidden_max = int(embed_dim * mlp_ratio)  # as timm's Mlp
        self.max_ratio = float(mlp_ratio)
        self.qkv_bias, self.in_chans, self.num_classes, self.divisor, self.eps = \
            bool(qkv_bias), in_chans, num_classes, divisor, float(eps)
        self.space = SearchSpace(
            resolutions=tuple(sorted(set(resolutions))),
            depths=(tuple(sorted(set(depths))),),
            widths=(dedupe_choices(embed_mults, self.embed),),
            expands=(dedupe_choices(ratios, self.hidden),),
            heads=(tuple(sorted(set(head_choices))),),
        )

    # -- channel counts --------------------------------------------------------------------------------------
    def embed(self, mult: float) -> int:
        return self.embed_dim if mult >= 1.0 else min(self.embed_dim, make_divisible(mult * self.embed_dim,
                                                                                     self.divisor))

    def hidden(self, ratio: float) -> int:
        if ratio >= self.max_ratio:
            return self.hidden_max
        return min(self.hidden_max, make_divisible(ratio / self.max_ratio * self.hidden_max, self.divisor))

    def blocks(self, arch: Arch) -> list[list[int]]:
        """``[heads, hidden]`` of every active block."""
        return [[h, self.hidden(e)] for h, e in zip(arch.heads[0], arch.expands[0])]

    # -- static description and costs ------------------------------------------------------------------------
    def static_spec(self, arch: Arch) -> dict[str, Any]:
        """JSON description of the dense network of ``arch`` (what :class:`StaticViT` builds)."""
        return {"family": "vit", "in_chans": self.in_chans, "num_classes": self.num_classes,
                "resolution": arch.resolution, "patch": self.patch_size, "embed": self.embed(arch.widths[0]),
                "head_dim": self.head_dim, "blocks": self.blocks(arch), "qkv_bias": self.qkv_bias, "eps": self.eps}

    def costs(self, arch: Arch) -> tuple[int, int]:
        return spec_costs(self.static_spec(arch))


def spec_costs(spec: dict[str, Any]) -> tuple[int, int]:
    """(MACs, parameters) of a static ViT spec at batch 1.

    MACs count the patch convolution, every linear layer on every token (QKV, projection, MLP), the two attention
    products (QKᵀ and attention·V, ``tokens² x head_dim`` per head each) and the head on the class token: what
    ``torch.utils.flop_counter`` counts, halved. LayerNorm, softmax, GELU, additions and the position embedding are
    not counted. Parameters are every weight and bias, the class token and the position embedding included.
    """
    k, d, patch, c = spec["embed"], spec["head_dim"], spec["patch"], spec["in_chans"]
    grid = spec["resolution"] // patch
    tokens = grid * grid + 1
    macs = grid * grid * c * patch * patch * k
    params = c * patch * patch * k + k + k + tokens * k  # patch conv and bias, class token, position embedding
    qkv_bias = 1 if spec["qkv_bias"] else 0
    for heads, hidden in spec["blocks"]:
        inner = heads * d
        macs += tokens * k * 3 * inner + 2 * heads * tokens * tokens * d + tokens * inner * k
        macs += 2 * tokens * k * hidden
        params += 4 * k + k * 3 * inner + 3 * inner * qkv_bias + inner * k + k + 2 * k * hidden + hidden + k
    macs += k * spec["num_classes"]
    params += 2 * k + k * spec["num_classes"] + spec["num_classes"]
    return macs, params
