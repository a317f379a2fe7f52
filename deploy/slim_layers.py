"""Width-switching layers: the third build of a family's blocks (after elastic and plain), for runtime width.

Each layer holds the largest width's weights and, per width, the shape it runs at there (taken from that
width's dense network, by layer name). Two ways to run a width:

* lean: the first forward prepares, for every width, views of the weights it needs (nothing is copied);
* fast: :class:`deploy.SlimmableNet` hands every layer per-width weights in the deployed form (BatchNorm folded
  into the convolution before it, contiguous, channels-last), derived once; a folded BatchNorm then passes its
  input through. A sliced view is strided memory and an unfolded BatchNorm is one more pass over the
  activations: together 1.3-3.8x the dense network's time.

Either way, switching width only changes one shared index (:class:`WidthSwitch`), so a switch costs the same
whatever the network's size. BatchNorm keeps one row of running statistics per width: a subnet's calibrated
statistics are not a slice of a larger one's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ofa.factory import Layers, largest_kernel


class WidthSwitch:
    """The index of the width every layer of one network runs at."""

    def __init__(self) -> None:
        self.index = 0


class _Slim:
    """What the three layers share: per-width shapes and the lazily prepared per-width views."""

    switch: WidthSwitch
    shapes: list

    def _init_slim(self, switch: WidthSwitch, num_widths: int) -> None:
        self.switch, self.shapes, self._views = switch, [None] * num_widths, None
        self.fast: list | None = None  # per width: the deployed-form tensors (set by SlimmableNet)

    def _apply(self, fn, *args, **kwargs):
        # the views and derived tensors belong to the old tensors after .to()/.half(); prepare them again
        self._views = self.fast = None
        return super()._apply(fn, *args, **kwargs)

    def views(self) -> tuple:
        if self._views is None:
            self._views = [None if shape is None else self._view(shape) for shape in self.shapes]
        return self._views[self.switch.index]


class SlimConv2d(_Slim, nn.Conv2d):
    def __init__(self, switch: WidthSwitch, num_widths: int, cin: int, cout: int, kernel: int, stride: int = 1,
                 groups: int = 1, bias: bool = False) -> None:
        super().__init__(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=bias)
        self._init_slim(switch, num_widths)

    def set_shape(self, width: int, dense: nn.Conv2d) -> None:
        self.shapes[width] = (dense.weight.shape[0], dense.weight.shape[1], dense.groups)

    def _view(self, shape: tuple) -> tuple:
        cout, cin, groups = shape
        return self.weight[:cout, :cin], None if self.bias is None else self.bias[:cout], groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias, groups = self.views() if self.fast is None else self.fast[self.switch.index]
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)


class SlimBatchNorm2d(_Slim, nn.Module):
    """Inference BatchNorm with per-width running statistics (``running_mean[width]``, ``running_var[width]``)."""

    def __init__(self, switch: WidthSwitch, num_widths: int, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(num_widths, channels))
        self.register_buffer("running_var", torch.ones(num_widths, channels))
        self.eps = eps
        self._init_slim(switch, num_widths)

    def set_shape(self, width: int, dense: nn.BatchNorm2d) -> None:
        self.shapes[width] = (width, dense.num_features)
        self.eps = dense.eps

    def _view(self, shape: tuple) -> tuple:
        width, c = shape
        return self.running_mean[width, :c], self.running_var[width, :c], self.weight[:c], self.bias[:c]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast is not None and self.fast[self.switch.index]:
            return x  # folded into the convolution before it
        mean, var, weight, bias = self.views()
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)


class SlimLinear(_Slim, nn.Linear):
    def __init__(self, switch: WidthSwitch, num_widths: int, cin: int, cout: int) -> None:
        super().__init__(cin, cout)
        self._init_slim(switch, num_widths)

    def set_shape(self, width: int, dense: nn.Linear) -> None:
        self.shapes[width] = (dense.in_features,)

    def _view(self, shape: tuple) -> tuple:
        return self.weight[:, :shape[0]], self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.views() if self.fast is None else self.fast[self.switch.index]
        return F.linear(x, weight, bias)


SLIM_LAYERS = (SlimConv2d, SlimBatchNorm2d, SlimLinear)


class SlimLayers(Layers):
    """The factory: a family's blocks built from it switch width with ``switch``."""

    def __init__(self, switch: WidthSwitch, num_widths: int) -> None:
        self.switch, self.num_widths = switch, num_widths

    def conv(self, cin: int, cout: int, kernel: int, stride: int = 1, bias: bool = False) -> nn.Module:
        return SlimConv2d(self.switch, self.num_widths, cin, cout, kernel, stride, bias=bias)

    def dw_conv(self, channels: int, kernel: int | Sequence[int], stride: int = 1) -> nn.Module:
        return SlimConv2d(self.switch, self.num_widths, channels, channels, largest_kernel(kernel), stride,
                          groups=channels)

    def bn(self, channels: int) -> nn.Module:
        return SlimBatchNorm2d(self.switch, self.num_widths, channels)

    def linear(self, cin: int, cout: int) -> nn.Module:
        return SlimLinear(self.switch, self.num_widths, cin, cout)


def derive_fast(body: nn.Module, pairs: Sequence[tuple[str, str]]) -> None:
    """Give every slim layer of ``body`` its per-width deployed-form tensors: each (convolution, BatchNorm) pair
    of ``pairs`` folded with that width's statistics (the arithmetic of ``torch.nn.utils.fusion``, so a width
    computes exactly what its folded dense network does), weights contiguous and channels-last."""
    modules = dict(body.named_modules())
    bn_of = dict(pairs)
    folded: dict[str, list[bool]] = {}
    # plain tensors even when the first forward runs under inference_mode, so later calls may run outside it
    with torch.inference_mode(False), torch.no_grad():
        for name, module in modules.items():
            if isinstance(module, SlimConv2d):
                bn = modules.get(bn_of.get(name))
                bn = bn if isinstance(bn, SlimBatchNorm2d) else None
                module.fast = [None if shape is None else _fold(module, shape, bn, i)
                               for i, shape in enumerate(module.shapes)]
                if bn is not None:
                    folded[bn_of[name]] = [shape is not None and bn.shapes[i] is not None
                                           for i, shape in enumerate(module.shapes)]
            elif isinstance(module, SlimLinear):
                module.fast = [None if shape is None else (module.weight[:, :shape[0]].contiguous(),
                                                           None if module.bias is None else module.bias.detach())
                               for shape in module.shapes]
        for name, module in modules.items():
            if isinstance(module, SlimBatchNorm2d):
                module.fast = folded.get(name, [False] * len(module.shapes))


def _fold(conv: SlimConv2d, shape: tuple, bn: SlimBatchNorm2d | None, width: int) -> tuple:
    weight, bias, groups = conv._view(shape)
    if bn is not None and bn.shapes[width] is not None:
        mean, var, gamma, beta = bn._view(bn.shapes[width])
        weight, bias = fuse_conv_bn_weights(weight, bias, mean, var, bn.eps, gamma, beta)
    weight = weight.detach().clone(memory_format=torch.channels_last)  # exact strides, as Module.to() sets them
    return weight, None if bias is None else bias.detach().contiguous(), groups


def drop_fast(body: nn.Module) -> None:
    """Back to views of the stored weights (the lean mode)."""
    for module in body.modules():
        if isinstance(module, SLIM_LAYERS):
            module.fast = None
