"""Turn a timm vision transformer (ViT, DeiT) into a supernet whose largest arch computes what the model computes.

Supported: timm's ``VisionTransformer`` with a class token, a learned absolute position embedding that includes the
class token's entry, pre-norm blocks of plain attention and GELU MLP, a final LayerNorm and a linear head on the
class token. Anything else is rejected naming the part. Derived choices: the last ``depth_choices`` depths, the
embedding dimension's ``embed_mults``, head counts from half the model's to all of them, MLP ratios ``mlp_ratios``
(each at most the model's). Weights come from the instance or a local ``checkpoint_path``: nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import torch
from torch import nn

from ...errors import OFAError
from ...timm_create import check_depth_choices, reject, timm_model

SUPPORTED = ("timm ViT/DeiT with a class token, learned absolute position embedding, pre-norm blocks, token "
             "pooling and no LayerScale, registers, qk-norm or fc_norm: vit_tiny_patch16_224, "
             "vit_small_patch16_224, deit_tiny_patch16_224")


def handles(model: str | nn.Module) -> bool:
    """Whether ``model`` (a timm name or instance) is a timm vision transformer."""
    if isinstance(model, str):
        from timm.models import is_model_in_modules

        return is_model_in_modules(model, ["vision_transformer", "deit"])
    from timm.models.vision_transformer import VisionTransformer

    return isinstance(model, VisionTransformer)


def _reject(why: str) -> NoReturn:
    reject(why, SUPPORTED)


def _identity(module: Any, where: str) -> None:
    if module is not None and not isinstance(module, nn.Identity):
        _reject(f"it has {where} ({type(module).__name__})")


def _describe(model: nn.Module) -> dict[str, Any]:
    """The constructor arguments of the model's largest arch, or a clear rejection of what does not map."""
    from timm.layers import PatchEmbed
    from timm.models.vision_transformer import Attention, Block, Mlp

    if getattr(model, "dist_token", None) is not None:
        _reject("a distillation token (DeiT distilled); use the non-distilled deit_tiny_patch16_224")
    if model.cls_token is None or model.global_pool != "token":
        _reject(f"pooling is {model.global_pool!r} (average pooling / no class token); only class-token pooling")
    if getattr(model, "reg_token", None) is not None or getattr(model, "num_reg_tokens", 0):
        _reject("register tokens")
    if model.pos_embed is None or getattr(model, "no_embed_class", False):
        _reject("no learned position embedding covering the class token")
    if getattr(model, "dynamic_img_size", False):
        _reject("dynamic image size (build it with dynamic_img_size=False; resolutions are elastic here)")
    _identity(model.norm_pre, "a pre-norm before the blocks")
    _identity(model.fc_norm, "fc_norm after pooling")
    _identity(getattr(model, "attn_pool", None), "attention pooling")
    pe = model.patch_embed
    if type(pe) is not PatchEmbed or not isinstance(pe.proj, nn.Conv2d) or not pe.flatten:
        _reject(f"its patch embedding is {type(pe).__name__} (conv stems are not supported)")
    _identity(pe.norm, "a norm in the patch embedding")
    p = pe.proj.kernel_size[0]
    if pe.proj.kernel_size != (p, p) or pe.proj.stride != (p, p) or pe.proj.padding != (0, 0) or pe.proj.bias is None:
        _reject("its patch convolution is not a square, non-overlapping patch with bias")
    embed, heads, qkv_bias, hidden, eps = pe.proj.out_channels, None, None, None, None
    for i, block in enumerate(model.blocks):
        where = f"blocks.{i}"
        if type(block) is not Block or type(block.attn) is not Attention or type(block.mlp) is not Mlp:
            _reject(f"{where} is a {type(block).__name__} (relative or windowed attention, parallel blocks...)")
        _identity(block.ls1, f"LayerScale in {where}")
        _identity(block.ls2, f"LayerScale in {where}")
        _identity(block.attn.q_norm, f"qk-norm in {where}")
        _identity(getattr(block.attn, "norm", None), f"a norm after attention in {where}")
        _identity(block.mlp.norm, f"a norm inside the MLP of {where}")
        if getattr(block.attn, "gate", None) is not None:
            _reject(f"gated attention in {where}")
        if type(block.mlp.act) is not nn.GELU or block.mlp.act.approximate != "none":
            _reject(f"{where}'s MLP activation is {type(block.mlp.act).__name__}; only exact GELU")
        for norm in (block.norm1, block.norm2):
            if not isinstance(norm, nn.LayerNorm) or not norm.elementwise_affine:
                _reject(f"{where} normalises with {type(norm).__name__}; only LayerNorm")
        this = (block.attn.num_heads, block.attn.qkv.bias is not None, block.mlp.fc1.out_features, block.norm1.eps)
        if heads is None:
            heads, qkv_bias, hidden, eps = this
        elif this != (heads, qkv_bias, hidden, eps):
            _reject(f"{where} differs from blocks.0 in heads, MLP width or norm")
    if not isinstance(model.norm, nn.LayerNorm) or not isinstance(model.head, nn.Linear):
        _reject("its final norm or head is not a LayerNorm and a Linear")
    return {"patch_size": p, "embed_dim": embed, "depth": len(model.blocks), "num_heads": heads,
            "mlp_ratio": hidden / embed, "qkv_bias": qkv_bias, "eps": eps, "in_chans": pe.proj.in_channels,
            "num_classes": model.num_classes}


def head_major_qkv(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """timm's QKV rows (all queries, all keys, all values) reordered head by head (query, key, value per head)."""
    head_dim = tensor.shape[0] // (3 * heads)
    return tensor.reshape(3, heads, head_dim, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)


def from_timm(model: str | nn.Module, checkpoint_path: str | None = None, num_classes: int | None = None,
                  in_chans: int | None = None, resolutions: Sequence[int] | None = None,
                  embed_mults: Sequence[float] = (0.75, 1.0), mlp_ratios: Sequence[float] | None = None,
                  head_choices: Sequence[int] | None = None, depth_choices: int = 3, divisor: int = 8):
    """A vision transformer supernet from a timm model name or instance (see :func:`ofa.from_timm`)."""
    import timm

    from .supernet import OFAViT

    name, model = timm_model(model, checkpoint_path, in_chans, head_key="head.weight",
                             stem_key="patch_embed.proj.weight", supported=SUPPORTED, is_family=handles,
                             family_text="a timm VisionTransformer", num_classes=num_classes)
    check_depth_choices(depth_choices)
    config = _describe(model)
    data = timm.data.resolve_data_config({}, model=model)
    size = data["input_size"][-1]
    p, depth, heads = config["patch_size"], config["depth"], config["num_heads"]
    if resolutions is None:
        resolutions = sorted({max(p, int(round(size * f / p)) * p) for f in (0.57, 0.71, 0.86, 1.0)})
    if max(resolutions) != size:
        raise OFAError(f"the largest resolution must be the model's own {size} (its position embedding's grid), "
                       f"got {list(resolutions)!r}")
    config.update(resolutions=list(resolutions), depths=list(range(max(1, depth - depth_choices + 1), depth + 1)),
                  embed_mults=list(embed_mults), divisor=divisor,
                  head_choices=list(head_choices) if head_choices is not None
                  else list(range(max(1, heads // 2), heads + 1)),
                  mlp_ratios=list(mlp_ratios) if mlp_ratios is not None
                  else sorted({config["mlp_ratio"] * f for f in (0.5, 0.75, 1.0)}))
    data_config = {"input_size": [config["in_chans"], size, size], "mean": list(data["mean"]),
                   "std": list(data["std"]), "interpolation": data["interpolation"], "crop_pct": data["crop_pct"]}
    origin = {"timm_model": name, "timm_version": timm.__version__, "checkpoint_path": checkpoint_path}
    net = OFAViT(name=f"timm:{name}", data_config=data_config, origin=origin, **config)
    state = dict(model.state_dict())
    for key in [k for k in state if k.endswith(("attn.qkv.weight", "attn.qkv.bias"))]:
        state[key] = head_major_qkv(state[key], heads)
    for key in ("cls_token", "pos_embed"):  # one layer of their own here (ofa.tokens)
        state[f"tokens.{key}"] = state.pop(key)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        _reject(f"layers do not map onto the supernet: {(missing or unexpected)[0]}")
    return net
