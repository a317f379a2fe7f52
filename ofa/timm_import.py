"""``ofa.from_timm``: turn a timm model into a supernet of the family that imports it.

Each family with a timm importer says which models it handles (:meth:`ofa.family.Family.timm_handles`); the
supernet's largest arch computes exactly what the model computes. Weights come from a local ``checkpoint_path``
or from the instance given: nothing is ever downloaded.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .errors import OFAError
from .registry import list_families


def supported_models() -> str:
    return "; ".join(f.timm_supported for f in list_families() if f.timm_supported)


def from_timm(model: str | nn.Module, checkpoint_path: str | None = None, **kwargs: Any):
    """A supernet from a timm model name or instance (see the family importers for the keyword arguments:
    ``num_classes``, ``in_chans``, ``resolutions``, ``width_mults``, ``stem_mults``, ``expand_fractions``,
    ``depth_choices``, ``divisor``)."""
    if isinstance(model, str):
        import timm

        if model not in timm.list_models():
            raise OFAError(f"unknown timm model {model!r}; supported: {supported_models()}")
    elif not isinstance(model, nn.Module):
        raise OFAError(f"expected a timm model name or instance, got {type(model).__name__}")
    for family in list_families():
        if family.timm_handles(model):
            return family.from_timm(model, checkpoint_path=checkpoint_path, **kwargs)
    what = model if isinstance(model, str) else type(model).__name__
    raise OFAError(f"unsupported timm model ({what} belongs to no supported network family); "
                   f"supported: {supported_models()}")
