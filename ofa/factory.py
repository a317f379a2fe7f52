"""Layer factories: one block definition, built either elastic (the supernet) or plain (the extracted network).

A family writes each block once, asking a factory for its layers (``layers.conv(...)``, ``layers.bn(...)``). With
:data:`DYNAMIC` the block's layers run on their first ``k`` channels (:mod:`ofa.layers`, :mod:`ofa.kernel`); with
:data:`STATIC` they are plain ``Conv2d``/``BatchNorm2d``/``Linear``/``LayerNorm`` of exactly the given sizes. Both
builds name their layers alike, so an extracted network receives its weights by name, and both run the same
``forward``, so extraction is exact by construction. Other factories (``deploy.SlimmableNet``'s width-switching layers) plug in
the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .kernel import DynamicKernelConv2d
from .layers import DynamicBatchNorm2d, DynamicConv2d, DynamicLayerNorm, DynamicLinear
from .tokens import DynamicTokens, Tokens


def largest_kernel(kernel: int | Sequence[int]) -> int:
    return max(kernel) if isinstance(kernel, (list, tuple)) else int(kernel)


class Layers:
    """The layers a block is made of. ``kernel`` of a depthwise conv is one size, or the elastic choices."""

    def conv(self, cin: int, cout: int, kernel: int, stride: int = 1, bias: bool = False) -> nn.Module:
        return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=bias)

    def dw_conv(self, channels: int, kernel: int | Sequence[int], stride: int = 1) -> nn.Module:
        k = largest_kernel(kernel)
        return nn.Conv2d(channels, channels, k, stride, k // 2, groups=channels, bias=False)

    def bn(self, channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels)

    def linear(self, cin: int, cout: int, bias: bool = True) -> nn.Module:
        return nn.Linear(cin, cout, bias=bias)

    def layer_norm(self, channels: int, eps: float = 1e-6) -> nn.Module:
        return nn.LayerNorm(channels, eps=eps)

    def patch_conv(self, cin: int, cout: int, patch: int) -> nn.Module:
        """A convolution cutting the image into non-overlapping ``patch`` x ``patch`` patches (with bias)."""
        return nn.Conv2d(cin, cout, patch, patch, 0, bias=True)

    def tokens(self, tokens: int, channels: int) -> nn.Module:
        """A transformer's class token and position embedding (:mod:`ofa.tokens`)."""
        return Tokens(tokens, channels)


class DynamicLayers(Layers):
    """Elastic layers: convolutions and BN over the first channels, depthwise convolutions with elastic kernels."""

    def conv(self, cin: int, cout: int, kernel: int, stride: int = 1, bias: bool = False) -> nn.Module:
        return DynamicConv2d(cin, cout, kernel, stride, bias=bias)

    def dw_conv(self, channels: int, kernel: int | Sequence[int], stride: int = 1) -> nn.Module:
        return DynamicKernelConv2d(channels, kernel if isinstance(kernel, (list, tuple)) else [kernel], stride)

    def bn(self, channels: int) -> nn.Module:
        return DynamicBatchNorm2d(channels)

    def linear(self, cin: int, cout: int, bias: bool = True) -> nn.Module:
        return DynamicLinear(cin, cout, bias=bias)

    def layer_norm(self, channels: int, eps: float = 1e-6) -> nn.Module:
        return DynamicLayerNorm(channels, eps=eps)

    def patch_conv(self, cin: int, cout: int, patch: int) -> nn.Module:
        return DynamicConv2d(cin, cout, patch, patch, padding=0, bias=True)

    def tokens(self, tokens: int, channels: int) -> nn.Module:
        return DynamicTokens(tokens, channels)


STATIC = Layers()
DYNAMIC = DynamicLayers()
