"""Width-switching layers: the third build of a family's blocks (after elastic and plain), for runtime width.

Each layer holds the largest width's weights and, per width, the shape it runs at there (taken from that
width's dense network, by layer name). The first forward prepares, for every width, views of the weights it
needs (nothing is copied); after that, switching width only changes one shared index (:class:`WidthSwitch`),
so a switch costs the same whatever the network's size. BatchNorm keeps one row of running statistics per width:
a subnet's calibrated statistics are not a slice of a larger one's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

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

    def _apply(self, fn, *args, **kwargs):
        self._views = None  # the views point at the old tensors after .to()/.half(); prepare them again
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
        weight, bias, groups = self.views()
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
        weight, bias = self.views()
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
