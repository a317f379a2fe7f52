"""Folding BatchNorm into the preceding convolutions, for inference and export.

Weights are stored unfolded (a user can re-calibrate BN on their own data); folding happens when a network is
loaded for inference or exported. ``torch.nn.utils.fusion.fuse_conv_bn_eval`` does the arithmetic: the folded
convolution computes ``bn(conv(x))`` in one layer, and the BatchNorm becomes an identity.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _fold_children(module: nn.Module) -> int:
    """Fold the (conv, bn) pairs among ``module``'s direct children: ``convX``/``bnX`` siblings (the timm naming
    the dense networks use) and a Conv2d directly followed by a BatchNorm2d in a Sequential."""
    folded = 0
    children = dict(module.named_children())
    pairs = []
    if isinstance(module, nn.Sequential):
        names = list(children)
        pairs += [(a, b) for a, b in zip(names, names[1:])
                  if isinstance(children[a], nn.Conv2d) and isinstance(children[b], nn.BatchNorm2d)]
    for name, child in children.items():
        if name.startswith("conv") and isinstance(child, nn.Conv2d):
            bn_name = "bn" + name[len("conv"):]
            if isinstance(children.get(bn_name), nn.BatchNorm2d):
                pairs.append((name, bn_name))
    for conv_name, bn_name in pairs:
        conv, bn = children[conv_name], children[bn_name]
        setattr(module, conv_name, fuse_conv_bn_eval(conv.eval(), bn.eval()))
        setattr(module, bn_name, nn.Identity())
        folded += 1
    for child in module.children():
        folded += _fold_children(child)
    return folded


def fold_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every BatchNorm folded into the convolution before it.

    The copy keeps the model's attributes (e.g. ``description``) and computes the same function in eval mode.
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    if hasattr(model, "conv_bn_pairs"):  # families whose names do not pair by number say which pairs to fold
        _fold_named_pairs(model, model.conv_bn_pairs())
    _fold_children(model)
    model.folded_bn = True
    return model


def _fold_named_pairs(model: nn.Module, pairs: list[tuple[str, str]]) -> int:
    folded = 0
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
            continue
        conv_parent, _, conv_attr = conv_name.rpartition(".")
        bn_parent, _, bn_attr = bn_name.rpartition(".")
        setattr(model.get_submodule(conv_parent), conv_attr, fuse_conv_bn_eval(conv.eval(), bn.eval()))
        setattr(model.get_submodule(bn_parent), bn_attr, nn.Identity())
        folded += 1
    return folded


def prepare_for_inference(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The form a deployed network runs in: BatchNorm folded, and weights in channels-last memory order (on
    this project's CPU measurements 15-45% faster than the default order for the same arithmetic; inputs may
    stay in the default order)."""
    model = fold_bn(model, inplace=inplace)
    return model.to(memory_format=torch.channels_last)


def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
