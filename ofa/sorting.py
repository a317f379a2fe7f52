"""Channel-importance sorting: put the most important channels first, without changing the function.

Elastic width keeps the first ``k`` channels, so before a phase widens the elastic width the channels of every
group are re-ordered by importance. A :class:`ChannelGroup` is a set of channels written by one or more producers
(a convolution and its BatchNorm, or a linear layer alone; several when a residual addition ties them) and read by
consumers (the next convolutions or linear layers). Permuting producers' output channels and consumers' input
channels together leaves the network's outputs unchanged. A :class:`HeadGroup` moves attention heads whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .errors import OFAError

CRITERIA = ("l1", "bn", "taylor", "fpgm")


@dataclass
class ChannelGroup:
    producers: list[tuple[nn.Module, nn.Module | None]]  # (layer, its BatchNorm or None)
    consumers: list[nn.Module]
    name: str = ""
    # Layers that carry the channels through unchanged (depthwise convolutions, BN, LayerNorm): permuted on
    # their outputs.
    passthrough: list[nn.Module] = field(default_factory=list)
    # Parameters whose last dimension is these channels (a transformer's class token and position embedding).
    embeddings: list[nn.Parameter] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.producers[0][0].weight.shape[0]

    def per_channel(self, score: torch.Tensor) -> torch.Tensor:
        """A producer's per-output-row score as one score per channel of the group."""
        return score

    @torch.no_grad()
    def permute(self, perm: torch.Tensor) -> None:
        for conv, bn in self.producers:
            _permute_out(conv, perm)
            _permute_out(bn, perm)
        for layer in self.passthrough:
            _permute_out(layer, perm)
        for layer in self.consumers:
            layer.weight.copy_(layer.weight[:, perm])
        for embedding in self.embeddings:
            embedding.copy_(embedding[..., perm])


@dataclass
class HeadGroup(ChannelGroup):
    """The attention heads of one block, moved whole: a head's ``3 * head_dim`` rows of a head-major QKV layer
    (the producer) and its ``head_dim`` input columns of the output projection (the consumer)."""

    head_dim: int = 1

    @property
    def size(self) -> int:
        return self.producers[0][0].weight.shape[0] // (3 * self.head_dim)

    def per_channel(self, score: torch.Tensor) -> torch.Tensor:
        return score.view(self.size, -1).sum(1)

    def _expand(self, perm: torch.Tensor, width: int) -> torch.Tensor:
        return (perm[:, None] * width + torch.arange(width, device=perm.device)).flatten()

    @torch.no_grad()
    def permute(self, perm: torch.Tensor) -> None:
        rows, cols = self._expand(perm, 3 * self.head_dim), self._expand(perm, self.head_dim)
        for layer, _ in self.producers:
            _permute_out(layer, rows)
        for layer in self.consumers:
            layer.weight.copy_(layer.weight[:, cols])


def _permute_out(layer: nn.Module | None, perm: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        t = getattr(layer, name, None)
        if t is not None:
            t.copy_(t[perm])


def _l1(conv: nn.Module, bn: nn.Module) -> torch.Tensor:
    return conv.weight.detach().abs().flatten(1).sum(1)


def _bn_scale(conv: nn.Module, bn: nn.Module) -> torch.Tensor:
    return bn.weight.detach().abs()


def _fpgm(conv: nn.Module, bn: nn.Module) -> torch.Tensor:
    # Filters far from all others (far from the geometric median) are the least replaceable.
    w = conv.weight.detach().flatten(1)
    return torch.cdist(w, w).sum(1)


def _taylor_scores(net: nn.Module, groups: list[ChannelGroup], batches: Iterable | None,
                   num_batches: int) -> dict[nn.Module, torch.Tensor]:
    """First-order Taylor importance |activation x gradient| of every producer BN's output channels."""
    if batches is None:
        raise OFAError("criterion 'taylor' needs batches: sort_channels(net, 'taylor', batches=...) "
                       "with (images, labels) pairs")
    bns = [bn for g in groups for _, bn in g.producers]
    scores = {bn: torch.zeros(bn.weight.shape[0], device=bn.weight.device) for bn in bns}
    hooks = []

    def hook(bn):
        def forward_hook(module, inputs, output):
            def grad_hook(grad):
                c = grad.shape[1]
                scores[bn][:c] += (output.detach() * grad).sum((2, 3)).abs().sum(0)
            output.register_hook(grad_hook)
        return forward_hook

    for bn in bns:
        hooks.append(bn.register_forward_hook(hook(bn)))
    was_training = net.training
    net.eval()
    seen = 0
    try:
        for batch in batches:
            if seen >= num_batches:
                break
            if not isinstance(batch, (list, tuple)) or len(batch) < 2:
                raise OFAError("criterion 'taylor' needs (images, labels) batches")
            x, y = batch[0], batch[1]
            net.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            seen += 1
    finally:
        for h in hooks:
            h.remove()
        net.zero_grad(set_to_none=True)
        net.train(was_training)
    if seen == 0:
        raise OFAError("criterion 'taylor' got no batches")
    return scores


def check_criterion(net: nn.Module, criterion: str) -> list[ChannelGroup]:
    """``net``'s channel groups, after checking that ``criterion`` can score them (a training config is checked
    with this before its first step, not when its first widening phase starts)."""
    if criterion not in CRITERIA:
        raise OFAError(f"unknown channel-importance criterion {criterion!r}; allowed: {list(CRITERIA)}")
    groups = net.channel_groups()
    if criterion in ("bn", "taylor") and any(bn is None for g in groups for _, bn in g.producers):
        raise OFAError(f"criterion {criterion!r} scores the BatchNorm after each layer, and {net.family} networks "
                       "have layers without one; use l1 or fpgm")
    return groups


def channel_importance(net: nn.Module, criterion: str = "l1", batches: Iterable | None = None,
                       num_batches: int = 4) -> list[tuple[ChannelGroup, torch.Tensor]]:
    """One importance score per channel of every group of ``net`` (larger is more important)."""
    groups = check_criterion(net, criterion)
    if criterion == "taylor":
        with net.active(net.space.largest()):
            taylor = _taylor_scores(net, groups, batches, num_batches)
    per_producer = {"l1": _l1, "bn": _bn_scale, "fpgm": _fpgm}.get(criterion)
    result = []
    for group in groups:
        total = torch.zeros(group.size, device=group.producers[0][0].weight.device)
        for conv, bn in group.producers:
            score = group.per_channel(taylor[bn] if criterion == "taylor" else per_producer(conv, bn))
            # Normalise so that producers of different scales weigh alike in a tied group.
            total += score / score.sum().clamp_min(1e-12)
        result.append((group, total))
    return result


def sort_channels(net: nn.Module, criterion: str = "l1", batches: Iterable | None = None,
                  num_batches: int = 4) -> dict[str, list[int]]:
    """Re-order every channel group of a supernet by importance, most important first.

    Criteria: ``l1`` (filter L1 norm, default), ``bn`` (BN scale, network slimming), ``taylor`` (first-order
    Taylor, needs ``batches`` of (images, labels)), ``fpgm`` (distance to the other filters, geometric median).
    The largest arch's outputs are unchanged. Returns each group's permutation (new position -> old channel).
    """
    perms = {}
    for i, (group, score) in enumerate(channel_importance(net, criterion, batches, num_batches)):
        perm = torch.argsort(score, descending=True, stable=True)
        group.permute(perm)
        perms[group.name or f"group{i}"] = perm.tolist()
    return perms
