"""The fast mode of :class:`deploy.SlimmableNet`: per-width weights in the deployed form, within a memory budget.

A width runs *derived* when its convolutions have their own weights in the deployed form (BatchNorm folded in
with that width's statistics, contiguous, channels-last): it then runs at its dense deployed network's speed. A
width that has none runs *lean*, on views of the stored weights (no memory, 1.3-3.7x slower). Two layouts:

* beside the stored weights (:func:`derive_exact`): copies made from the stored, unfolded weights; the network can
  still be saved, extracted, moved. Costs the stored weights plus one copy per width (4-5x the largest dense
  network for 7 widths).
* in place of them (:func:`fold_in_place`): the stored convolution weights *become* the largest width's deployed
  form (its BatchNorm folded in, channels-last), so the largest width runs derived on them without a copy. Every
  other width runs on its own copy made from them (:func:`derive_rescaled`) or lean: views of them followed by a
  per-channel scale and shift. Inference only: the unfolded weights are gone.

Why the rescale is exact enough and safe: a width's folded weights are ``W * s_i`` with ``s_i = gamma /
sqrt(var_i + eps)``; from the largest's ``W * s_L`` they are ``(W * s_L) * r_i`` with ``r_i = sqrt(var_L + eps) /
sqrt(var_i + eps)``. Gamma cancels, so a zero gamma (a channel every width outputs as its shift) divides by nothing.

:func:`prepare` picks the layout and which widths run derived so that what is held stays within a limit in bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .slim_layers import SLIM_LAYERS, SlimBatchNorm2d, SlimConv2d, SlimLinear, SlimTokens

Pairs = list[tuple[SlimConv2d, SlimBatchNorm2d]]


def conv_bn_modules(body: nn.Module, pairs: Sequence[tuple[str, str]]) -> Pairs:
    """The (convolution, BatchNorm) modules of named ``pairs`` that are both width-switching layers."""
    modules = dict(body.named_modules())
    out = []
    for conv, bn in pairs:
        conv, bn = modules.get(conv), modules.get(bn)
        if isinstance(conv, SlimConv2d) and isinstance(bn, SlimBatchNorm2d):
            out.append((conv, bn))
    return out


def reset(body: nn.Module) -> None:
    """Every width lean again, on views of the stored weights (made again at the next lean forward)."""
    for module in body.modules():
        if isinstance(module, SLIM_LAYERS):
            module.fast, module._views = None, None


def held_bytes(net: nn.Module) -> tuple[int, int]:
    """(stored, derived) bytes: the storages of the state dict, then those only the per-width tensors hold
    (a derived tensor that shares a stored one's memory costs nothing)."""
    seen: set[int] = set()

    def new_bytes(t: torch.Tensor) -> int:
        if t.numel() == 0 or t.untyped_storage().data_ptr() in seen:
            return 0
        seen.add(t.untyped_storage().data_ptr())
        return t.untyped_storage().nbytes()

    stored = sum(new_bytes(t) for t in net.state_dict().values())
    derived = 0
    for module in net.modules():
        for entry in getattr(module, "fast", None) or ():
            for t in entry if isinstance(entry, tuple) else ():
                if isinstance(t, torch.Tensor):
                    derived += new_bytes(t)
    return stored, derived


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    # exact strides, as Module.to(memory_format=...) sets them on the dense network
    return t.detach().clone(memory_format=torch.channels_last)


def derive_exact(body: nn.Module, pairs: Pairs, width: int) -> None:
    """Width ``width``'s deployed-form copies from the stored, unfolded weights: each convolution folded with its
    BatchNorm at that width's statistics (torch.nn.utils.fusion's arithmetic, so the width computes exactly what
    its folded dense network does)."""
    bn_of = {id(conv): bn for conv, bn in pairs}
    for module in body.modules():
        if not isinstance(module, (SlimConv2d, SlimLinear, SlimTokens)) or module.shapes[width] is None:
            continue
        if isinstance(module, SlimConv2d):
            weight, bias, groups = module._view(module.shapes[width])
            bn = bn_of.get(id(module))
            if bn is not None and bn.shapes[width] is not None:
                mean, var, gamma, beta = bn._view(bn.shapes[width])
                weight, bias = fuse_conv_bn_weights(weight, bias, mean, var, bn.eps, gamma, beta)
                bn.fast[width] = True  # folded: it passes its input through
            module.fast[width] = (_channels_last(weight), None if bias is None else bias.detach().contiguous(),
                                  groups)
        else:  # a full-size view is the stored tensor itself: .contiguous() copies nothing then
            module.fast[width] = tuple(None if t is None else t.detach().contiguous()
                                       for t in module._view_width(width))


def fold_in_place(body: nn.Module, pairs: Pairs) -> None:
    """Make the stored weights the largest width's deployed form (see the module's docstring); every other width
    runs lean on them until :func:`derive_rescaled` gives it copies. Frees the folded BatchNorms' tensors."""
    largest = len(pairs[0][0].shapes) - 1 if pairs else 0
    folded = set()
    for conv, bn in pairs:
        if conv.shapes[largest] is None or bn.shapes[largest] is None:
            continue  # not in the largest width (cannot happen for nested widths): stays as stored
        b = conv.bias if conv.bias is not None else torch.zeros_like(bn.weight)
        rsqrt_largest = torch.rsqrt(bn.running_var[largest] + bn.eps)
        for i, shape in enumerate(bn.shapes):
            if i != largest and shape is not None and conv.shapes[i] is not None:
                c = shape[1]
                rsqrt = torch.rsqrt(bn.running_var[i, :c] + bn.eps)
                scale = rsqrt / rsqrt_largest[:c]
                shift = (b[:c] - bn.running_mean[i, :c]) * rsqrt * bn.weight[:c] + bn.bias[:c]
                bn.fast[i] = (scale.view(-1, 1, 1).contiguous(), shift.view(-1, 1, 1).contiguous())
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean[largest],
                                            bn.running_var[largest], bn.eps, bn.weight, bn.bias)
        conv.weight = nn.Parameter(_channels_last(weight), requires_grad=False)
        conv.bias = None  # folded into each width's shift
        conv.fast[largest] = (conv.weight, bias.detach().contiguous(), conv.groups)
        bn.fast[largest] = True
        for name in ("weight", "bias"):
            setattr(bn, name, nn.Parameter(torch.empty(0), requires_grad=False))
        for name in ("running_mean", "running_var"):
            setattr(bn, name, torch.empty(0))
        folded.add(id(conv))
    for module in body.modules():
        if isinstance(module, SlimConv2d) and id(module) not in folded and module.shapes[largest] is not None:
            # unfolded convolutions too: the largest width runs on the stored weight, made channels-last
            module.weight = nn.Parameter(_channels_last(module.weight), requires_grad=False)
            module.fast[largest] = (module.weight, module.bias, module.groups)
        if isinstance(module, SLIM_LAYERS):
            module._views = None  # views of replaced tensors
    _derive_plain(body, largest)


def _derive_plain(body: nn.Module, width: int) -> None:
    """Linear layers and tokens (never folded) at ``width``: contiguous copies of their views."""
    for module in body.modules():
        if isinstance(module, (SlimLinear, SlimTokens)) and module.shapes[width] is not None:
            module.fast[width] = tuple(None if t is None else t.detach().contiguous()
                                       for t in module._view_width(width))


def derive_rescaled(body: nn.Module, pairs: Pairs, width: int) -> None:
    """Width ``width``'s deployed-form copies, made from the weights :func:`fold_in_place` folded."""
    rescaled = {id(conv): bn for conv, bn in pairs if isinstance(bn.fast[width], tuple)}
    for module in body.modules():
        if not isinstance(module, SlimConv2d) or module.shapes[width] is None:
            continue
        weight, bias, groups = module._view(module.shapes[width])
        bn = rescaled.get(id(module))
        if bn is not None:
            scale, shift = bn.fast[width]
            weight, bias = weight * scale.view(-1, 1, 1, 1), shift.view(-1)
            bn.fast[width] = True
        module.fast[width] = (_channels_last(weight), bias, groups)
    _derive_plain(body, width)


def prepare(net: nn.Module, body: nn.Module, names: Sequence[tuple[str, str]], num_widths: int,
            limit: float | None, fold: bool = False, folded: bool = False) -> bool:
    """Give widths deployed-form weights while ``held_bytes(net)`` stays within ``limit`` bytes (None: no limit).

    Every width beside the stored weights if that fits (and ``fold`` is False); otherwise the stored weights are
    folded in place (the largest width runs on them) and the other widths get copies smallest first, as long as
    they fit: that runs the most widths at dense speed, and the lean widths' slowdown (1.3-3.7x measured on
    7-width chains) shows no trend with width that would favour the large ones. ``folded``: the stored weights
    already are (add the widths that now fit). Returns True when folded."""
    pairs = conv_bn_modules(body, names)
    with torch.inference_mode(False), torch.no_grad():  # plain tensors even when called under inference_mode
        if not folded:
            if not fold:
                _allocate(body, num_widths)
                for i in [num_widths - 1, *range(num_widths - 1)]:
                    derive_exact(body, pairs, i)
                    if limit is not None and sum(held_bytes(net)) > limit:
                        break
                else:
                    return False
            reset(body)
            _allocate(body, num_widths)
            fold_in_place(body, pairs)
        for i in range(num_widths - 1):
            if derived(body, i):
                continue
            before = _snapshot(body, i)
            derive_rescaled(body, pairs, i)
            if limit is not None and sum(held_bytes(net)) > limit:
                _restore(before, i)  # widths are nested: the next ones are larger and will not fit either
                break
    return True


def derived(body: nn.Module, width: int) -> bool:
    """True if every convolution width ``width`` uses has its own deployed-form weights."""
    convs = [m for m in body.modules() if isinstance(m, SlimConv2d) and m.shapes[width] is not None]
    return bool(convs) and all(m.fast is not None and m.fast[width] is not None for m in convs)


def _allocate(body: nn.Module, num_widths: int) -> None:
    for module in body.modules():
        if isinstance(module, SLIM_LAYERS) and module.fast is None:
            module.fast = [None] * num_widths


def _snapshot(body: nn.Module, width: int) -> list:
    return [(m, m.fast[width]) for m in body.modules() if isinstance(m, SLIM_LAYERS) and m.fast is not None]


def _restore(snapshot: list, width: int) -> None:
    for module, entry in snapshot:
        module.fast[width] = entry
