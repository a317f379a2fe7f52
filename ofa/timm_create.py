"""Creating a timm model offline: random weights, or a local checkpoint whose class and channel counts it takes."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NoReturn

from torch import nn

from .errors import OFAError


def create_timm_model(name: str, checkpoint_path: str | None, in_chans: int | None, *, head_key: str,
                      stem_key: str, supported: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name)`` without any download; ``checkpoint_path`` (safetensors or a torch state dict,
    read with ``weights_only=True``) supplies the weights, and its ``head_key``/``stem_key`` tensors the class and
    input-channel counts."""
    import timm

    if name not in timm.list_models():
        raise OFAError(f"unknown timm model {name!r}; supported: {supported}")
    if checkpoint_path is None:
        return timm.create_model(name, pretrained=False, in_chans=in_chans or 3, **kwargs)
    if not os.path.isfile(checkpoint_path):
        raise OFAError(f"checkpoint_path {checkpoint_path!r} does not exist")
    from timm.models import load_state_dict

    try:
        state = load_state_dict(checkpoint_path, weights_only=True)
    except Exception as e:
        raise OFAError(f"cannot read checkpoint {checkpoint_path!r} ({type(e).__name__}: {e}); expected a "
                       "safetensors file or a torch state dict") from None
    classes = state[head_key].shape[0] if head_key in state else 1000
    chans = state[stem_key].shape[1] if stem_key in state else 3
    model = timm.create_model(name, pretrained=False, num_classes=classes, in_chans=chans)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[1:2] or [str(e)]
        raise OFAError(f"checkpoint {checkpoint_path!r} does not fit timm model {name!r}: {first[0].strip()}") \
            from None
    return model


def reject(why: str, supported: str) -> NoReturn:
    raise OFAError(f"unsupported timm model ({why}); supported: {supported}")


def timm_model(model: str | nn.Module, checkpoint_path: str | None, in_chans: int | None, *, head_key: str,
               stem_key: str, supported: str, is_family: Callable[[nn.Module], bool], family_text: str,
               num_classes: int | None = None, **kwargs: Any) -> tuple[str, nn.Module]:
    """``(name, model)`` of a timm model name (created offline by :func:`create_timm_model`) or instance (used as
    it is: weights go into the instance, so a ``checkpoint_path`` with it is an error), refused unless
    ``is_family(model)`` (``family_text`` says what it must be), with a new classifier for ``num_classes``."""
    name = model if isinstance(model, str) else getattr(model, "default_cfg", {}).get("architecture", "instance")
    if isinstance(model, str):
        model = create_timm_model(model, checkpoint_path, in_chans, head_key=head_key, stem_key=stem_key,
                                  supported=supported, **kwargs)
    elif checkpoint_path is not None:
        raise OFAError("checkpoint_path is only used with a model name; load weights into the instance instead")
    if not isinstance(model, nn.Module):
        raise OFAError(f"expected a timm model name or instance, got {type(model).__name__}")
    if not is_family(model):
        reject(f"{type(model).__name__} is not {family_text}", supported)
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)  # untrained: fine-tune it before using the supernet as a teacher
    return name, model


def check_depth_choices(depth_choices: Any) -> None:
    if not isinstance(depth_choices, int) or depth_choices < 1:
        raise OFAError(f"depth_choices must be a positive integer, got {depth_choices!r}")
