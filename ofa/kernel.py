"""The elastic-kernel depthwise convolution (once-for-all's elastic kernel size).

One weight of the largest kernel ``K`` serves every kernel size. A smaller kernel ``k`` is the centre ``k x k`` of
the next larger size's kernel passed through a small learned ``k^2 x k^2`` transformation, one per layer and size,
shared by all channels (7 -> 5 -> 3, each step built on the previous one). The transformations start as the
identity, so before the kernel phase trains them a small kernel is exactly the centre crop. ``extract`` folds them
into the plain weights of the dense network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import cached_eval_weight

KERNEL_SIZES = (3, 5, 7)


class DynamicKernelConv2d(nn.Conv2d):
    """A depthwise convolution over the first ``x.shape[1]`` channels with an elastic kernel size.

    ``kernel_sizes`` are the allowed sizes (odd; the largest is the stored weight's). ``active_kernel`` is set by
    the supernet. The transformations are parameters ``transforms.<k>`` of shape ``(k*k, k*k)``.
    """

    def __init__(self, channels: int, kernel_sizes: Sequence[int], stride: int = 1) -> None:
        sizes = tuple(sorted(set(int(k) for k in kernel_sizes)))
        if not sizes or any(k < 1 or k % 2 == 0 for k in sizes):
            raise ValueError(f"kernel sizes must be odd positive integers, got {list(kernel_sizes)}")
        big = sizes[-1]
        super().__init__(channels, channels, big, stride, big // 2, groups=channels, bias=False)
        self.kernel_sizes = sizes
        self.active_kernel = big
        self.transforms = nn.ParameterDict(
            {str(k): nn.Parameter(torch.eye(k * k)) for k in sizes[:-1]})

    def export_to(self, dense: nn.Conv2d) -> None:
        """Extraction: the dense convolution's plain weight, the kernel transformations folded in."""
        dense.weight.copy_(self.kernel_weight(dense.kernel_size[0], dense.weight.shape[0]))

    def kernel_weight(self, kernel: int | None = None, channels: int | None = None) -> torch.Tensor:
        """The ``(channels, 1, k, k)`` weight of kernel size ``k`` (the transformations applied)."""
        kernel = self.active_kernel if kernel is None else kernel
        weight = self.weight if channels is None else self.weight[:channels]
        c = weight.shape[0]
        # Walk down the allowed sizes: each one is the transformed centre of the one above it.
        for k in reversed(self.kernel_sizes[:-1]):
            if k < kernel:
                break
            start = (weight.shape[-1] - k) // 2
            centre = weight[:, :, start:start + k, start:start + k].reshape(c, k * k)
            weight = (centre @ self.transforms[str(k)]).reshape(c, 1, k, k)
        return weight

    def _weight_for(self, kernel: int, channels: int) -> torch.Tensor:
        params = (self.weight, *self.transforms.values())
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return self.kernel_weight(kernel, channels)
        # Without autograd (evaluation), keep the transformed kernel: recomputing the small matrix products on
        # every call costs more than a batch-1 depthwise convolution.
        key = (kernel, channels, self.weight.data_ptr(), self.weight.device, self.weight.dtype,
               tuple(p._version for p in params))
        return cached_eval_weight(self, "_kernel_cache", key, lambda: self.kernel_weight(kernel, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin, k = x.shape[1], self.active_kernel
        return F.conv2d(x, self._weight_for(k, cin), None, self.stride, k // 2, self.dilation, cin)
