"""Dynamic layers: plain PyTorch layers that run on the first ``k`` channels of their weights.

Input channels are taken from the input tensor; output channels from ``active_out``, which the supernet sets
when an architecture is made active. Slicing always keeps the *first* channels, which is why channels are
sorted by importance before the width phase. There are no masks: a sliced layer does less work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cached_eval_weight(module: nn.Module, attr: str, key: tuple, make) -> torch.Tensor:
    """``make()``'s weight, kept on ``module`` under ``attr`` until ``key`` changes (evaluation only: no autograd).

    Keys include the weights' version counters, so any in-place update (optimizer step, load_state_dict, channel
    sorting) invalidates the entry. The entry is a contiguous copy, never a view: a no-grad view whose base is
    then updated in place would make the module impossible to deepcopy.
    """
    cache = getattr(module, attr, None)
    if cache is None or cache[0] != key:
        cache = (key, make().clone(memory_format=torch.contiguous_format))
        setattr(module, attr, cache)
    return cache[1]


def sliced_weight(module: nn.Module, cout: int, cin: int) -> torch.Tensor:
    """The first ``cout`` x ``cin`` block of ``module.weight``. Without autograd (evaluation) one contiguous copy
    is kept: a convolution or matmul would otherwise copy the non-contiguous view on every call."""
    weight = module.weight
    if cout == weight.shape[0] and cin == weight.shape[1]:
        return weight
    if torch.is_grad_enabled() and weight.requires_grad:
        return weight[:cout, :cin]
    key = (cout, cin, weight._version, weight.data_ptr(), weight.device, weight.dtype)
    return cached_eval_weight(module, "_slice_cache", key, lambda: weight[:cout, :cin])


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor``, never going more than 10% below ``value``."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class DynamicConv2d(nn.Conv2d):
    """A convolution over the first ``x.shape[1]`` input and first ``active_out`` output channels (depthwise
    convolutions are :class:`ofa.kernel.DynamicKernelConv2d`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | None = None, bias: bool = False) -> None:
        padding = kernel_size // 2 if padding is None else padding
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        self.active_out = out_channels
        self._slice_cache: tuple | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin, cout = x.shape[1], self.active_out
        weight = sliced_weight(self, cout, cin)
        bias = None if self.bias is None else self.bias if cout == self.bias.shape[0] else self.bias[:cout]
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first ``x.shape[1]`` channels, with sliced statistics.

    ``update_running_stats`` decides whether a training-mode forward updates the stored statistics. The
    supernet turns it off for every arch but the largest, so the stored statistics stay the largest arch's;
    :func:`ofa.calibrate_bn` turns it on while it re-estimates statistics for another arch.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.update_running_stats = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        weight, bias, mean, var = self.weight, self.bias, self.running_mean, self.running_var
        if c != self.num_features:
            weight, bias, mean, var = weight[:c], bias[:c], mean[:c], var[:c]
        if not self.training:
            return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)
        if not self.update_running_stats:
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        # The slices are views: batch_norm updates the first c entries of the stored statistics in place.
        return F.batch_norm(x, mean, var, weight, bias, True, factor, self.eps)


class DynamicLinear(nn.Linear):
    """A linear layer over the first ``x.shape[-1]`` input and first ``active_out`` output features (a classifier
    keeps ``active_out`` at all its outputs)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.active_out = out_features
        self._slice_cache: tuple | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin, cout = x.shape[-1], self.active_out
        bias = None if self.bias is None else self.bias if cout == self.bias.shape[0] else self.bias[:cout]
        return F.linear(x, sliced_weight(self, cout, cin), bias)


class DynamicLayerNorm(nn.LayerNorm):
    """LayerNorm over the first ``x.shape[-1]`` features: it normalises over the active channels only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        if c == self.normalized_shape[0]:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return F.layer_norm(x, (c,), self.weight[:c], self.bias[:c], self.eps)
