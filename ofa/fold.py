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

from .static import conv_bn_pairs


def _fold_pair(module: nn.Module, conv_name: str, bn_name: str) -> bool:
    conv, bn = module.get_submodule(conv_name), module.get_submodule(bn_name)
    if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
        return False  # already folded, or a block without that layer
    conv_parent, _, conv_attr = conv_name.rpartition(".")
    bn_parent, _, bn_attr = bn_name.rpartition(".")
    setattr(module.get_submodule(conv_parent), conv_attr, fuse_conv_bn_eval(conv.eval(), bn.eval()))
    setattr(module.get_submodule(bn_parent), bn_attr, nn.Identity())
    return True


def fold_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every BatchNorm folded into the convolution before it.

    The pairs are the ones the network's modules declare (``conv_bn_pairs()``, names relative to the declaring
    module: a family's dense network, its blocks and its latency units).
    The copy keeps the model's attributes (e.g. ``description``) and computes the same function in eval mode.
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    for conv_name, bn_name in conv_bn_pairs(model):
        _fold_pair(model, conv_name, bn_name)
    model.folded_bn = True
    return model


def prepare_for_inference(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The form a deployed network runs in: BatchNorm folded, and weights in channels-last memory order (on
    this project's CPU measurements 15-45% faster than the default order for the same arithmetic; inputs may
    stay in the default order)."""
    model = fold_bn(model, inplace=inplace)
    return model.to(memory_format=torch.channels_last)


def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
