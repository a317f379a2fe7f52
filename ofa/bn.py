"""BatchNorm recalibration: re-estimate running statistics for the arch a network runs as.

Shared statistics are wrong for any subnet but the one they were gathered on; a few batches of training-like
images re-estimate them (a cumulative average over the batches, as once-for-all and EagleEye do).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .errors import OFAError


class BNState:
    """The BN statistics a network had before calibration. ``restore()`` or leaving a ``with`` block puts them
    back, so evaluating a subnet never leaves the supernet carrying that subnet's statistics."""

    def __init__(self, saved: dict[nn.Module, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
        self._saved = saved

    @torch.no_grad()
    def restore(self) -> None:
        for bn, (mean, var, count) in self._saved.items():
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.num_batches_tracked.copy_(count)

    def __enter__(self) -> BNState:
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def calibrate_bn(model: nn.Module, batches: Iterable, num_batches: int | None = None,
                 device: torch.device | str | None = None) -> BNState:
    """Reset and re-estimate the BN running statistics of ``model`` as it is now (its active arch).

    ``batches`` yields image tensors or (images, labels) pairs at the model's input resolution. Train/eval modes
    are left as they were. Returns a :class:`BNState`; ``with calibrate_bn(net, batches): ...`` restores the
    previous statistics afterwards. A network without BatchNorm runs no forward pass.
    """
    if num_batches is not None and num_batches < 1:
        raise OFAError(f"num_batches must be a positive integer, got {num_batches}")
    bns = _batchnorms(model)
    if not bns:  # LayerNorm networks (vision transformers) keep no running statistics: nothing to estimate
        return BNState({})
    saved = {bn: (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()) for bn in bns}
    settings = {bn: (bn.momentum, bn.training, getattr(bn, "update_running_stats", None)) for bn in bns}
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
    seen = 0
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batches
            bn.train()
            if hasattr(bn, "update_running_stats"):
                bn.update_running_stats = True
        for batch in batches:
            if num_batches is not None and seen >= num_batches:
                break
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            model(x.to(device))
            seen += 1
    except BaseException:
        BNState(saved).restore()
        raise
    finally:
        for bn, (momentum, training, update) in settings.items():
            bn.momentum = momentum
            bn.train(training)
            if update is not None:
                bn.update_running_stats = update
    if seen == 0:
        BNState(saved).restore()
        raise OFAError("calibrate_bn got no batches; pass an iterable of image tensors or (images, labels) pairs")
    return BNState(saved)
