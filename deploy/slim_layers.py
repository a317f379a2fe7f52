"""Width-switching layers: the third build of a family's blocks (after elastic and plain), for runtime width.

Each layer holds the largest width's weights and, per width, the shape it runs at there (taken from that
width's dense network, by layer name). Two ways to run a width:

* lean: the first forward prepares, for every width, views of the weights it needs (nothing is copied);
* fast: :mod:`deploy.slim_fast` hands a layer, per width, weights in the deployed form (BatchNorm folded
  into the convolution before it, contiguous, channels-last); a folded BatchNorm then passes its input through.
  A width without them runs on views. A sliced view is strided memory and an unfolded BatchNorm is one more pass
  over the activations: together 1.3-3.8x the dense network's time.

Either way, switching width only changes one shared index (:class:`WidthSwitch`), so a switch costs the same
whatever the network's size. BatchNorm keeps one row of running statistics per width: a subnet's calibrated
statistics are not a slice of a larger one's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ofa.factory import Layers, largest_kernel
from ofa.tokens import Tokens


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
        # per width: the deployed-form tensors, or None to run on views (set by deploy.slim_fast)
        self.fast: list | None = None

    def _apply(self, fn, *args, **kwargs):
        # the views and derived tensors belong to the old tensors after .to()/.half(); prepare them again
        self._views = self.fast = None
        return super()._apply(fn, *args, **kwargs)

    def entry(self):
        """This width's deployed-form entry, None when it runs on views."""
        return None if self.fast is None else self.fast[self.switch.index]

    def views(self) -> tuple:
        if self._views is None:
            self._views = [None if shape is None else self._view_width(i) for i, shape in enumerate(self.shapes)]
        return self._views[self.switch.index]

    def _view_width(self, width: int) -> tuple:
        return self._view(self.shapes[width])


class SlimConv2d(_Slim, nn.Conv2d):
    def __init__(self, switch: WidthSwitch, num_widths: int, cin: int, cout: int, kernel: int, stride: int = 1,
                 groups: int = 1, bias: bool = False, padding: int | None = None) -> None:
        super().__init__(cin, cout, kernel, stride, kernel // 2 if padding is None else padding, groups=groups,
                         bias=bias)
        self._init_slim(switch, num_widths)

    def set_shape(self, width: int, dense: nn.Conv2d) -> None:
        self.shapes[width] = (dense.weight.shape[0], dense.weight.shape[1], dense.groups)

    def _view(self, shape: tuple) -> tuple:
        cout, cin, groups = shape
        return self.weight[:cout, :cin], None if self.bias is None else self.bias[:cout], groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = self.entry()
        weight, bias, groups = self.views() if fast is None else fast
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)


class SlimBatchNorm2d(_Slim, nn.Module):
    """Inference BatchNorm with per-width running statistics (``running_mean[width]``, ``running_var[width]``).

    Its fast entry per width: True when folded into the convolution before it (it passes its input through), or
    a (scale, shift) pair applied after that convolution's weights had another width's statistics folded in."""

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

    def load_width(self, width: int, dense: nn.BatchNorm2d) -> None:
        """The width's own (calibrated) statistics."""
        c = dense.num_features
        self.running_mean[width, :c] = dense.running_mean
        self.running_var[width, :c] = dense.running_var

    def _view(self, shape: tuple) -> tuple:
        width, c = shape
        return self.running_mean[width, :c], self.running_var[width, :c], self.weight[:c], self.bias[:c]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = self.entry()
        if fast is True:
            return x
        if fast is not None:
            scale, shift = fast
            return torch.addcmul(shift, x, scale)
        mean, var, weight, bias = self.views()
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)


class SlimLinear(_Slim, nn.Linear):
    def __init__(self, switch: WidthSwitch, num_widths: int, cin: int, cout: int, bias: bool = True) -> None:
        super().__init__(cin, cout, bias=bias)
        self._init_slim(switch, num_widths)

    def set_shape(self, width: int, dense: nn.Linear) -> None:
        self.shapes[width] = (dense.in_features, dense.out_features)

    def _view(self, shape: tuple) -> tuple:
        cin, cout = shape
        return self.weight[:cout, :cin], None if self.bias is None else self.bias[:cout]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = self.entry()
        weight, bias = self.views() if fast is None else fast
        return F.linear(x, weight, bias)


class SlimLayerNorm(_Slim, nn.LayerNorm):
    """LayerNorm over each width's first channels (prefixes of the stored affine parameters: no copies)."""

    def __init__(self, switch: WidthSwitch, num_widths: int, channels: int, eps: float) -> None:
        super().__init__(channels, eps=eps)
        self._init_slim(switch, num_widths)

    def set_shape(self, width: int, dense: nn.LayerNorm) -> None:
        self.shapes[width] = (dense.normalized_shape[0],)

    def _view(self, shape: tuple) -> tuple:
        return shape, self.weight[:shape[0]], self.bias[:shape[0]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, weight, bias = self.views()
        return F.layer_norm(x, shape, weight, bias, self.eps)


class SlimTokens(_Slim, Tokens):
    """A transformer's class token (one, sliced per width) and one position embedding per width (``pos_embed[i]``,
    padded to the largest token count and width): a smaller resolution's table is resampled, not a slice."""

    def __init__(self, switch: WidthSwitch, num_widths: int, tokens: int, channels: int) -> None:
        super().__init__(tokens, channels)
        self.pos_embed = nn.Parameter(torch.zeros(num_widths, tokens, channels))
        self._init_slim(switch, num_widths)

    def set_shape(self, width: int, dense: nn.Module) -> None:
        tokens, channels = dense.pos_embed.shape[1:]
        if tokens > self.pos_embed.shape[1]:  # a width at a larger resolution than the largest width's
            self.pos_embed = nn.Parameter(torch.zeros(len(self.shapes), tokens, self.pos_embed.shape[2]))
        self.shapes[width] = (tokens, channels)

    def load_width(self, width: int, dense: nn.Module) -> None:
        tokens, channels = self.shapes[width]
        self.pos_embed[width, :tokens, :channels] = dense.pos_embed[0]

    def _view_width(self, width: int) -> tuple:
        tokens, channels = self.shapes[width]
        return self.cls_token[..., :channels], self.pos_embed[width, :tokens, :channels][None]

    def embeddings(self, grid: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        fast = self.entry()
        return self.views() if fast is None else fast


SLIM_LAYERS = (SlimConv2d, SlimBatchNorm2d, SlimLinear, SlimLayerNorm, SlimTokens)


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

    def linear(self, cin: int, cout: int, bias: bool = True) -> nn.Module:
        return SlimLinear(self.switch, self.num_widths, cin, cout, bias)

    def layer_norm(self, channels: int, eps: float = 1e-6) -> nn.Module:
        return SlimLayerNorm(self.switch, self.num_widths, channels, eps)

    def patch_conv(self, cin: int, cout: int, patch: int) -> nn.Module:
        return SlimConv2d(self.switch, self.num_widths, cin, cout, patch, patch, bias=True, padding=0)

    def tokens(self, tokens: int, channels: int) -> nn.Module:
        return SlimTokens(self.switch, self.num_widths, tokens, channels)
