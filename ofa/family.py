"""The family interface: what the rest of the project asks of one network family.

A family (``ofa/families/<name>/``) knows one network structure. It writes its blocks once against a layer
factory (:mod:`ofa.factory`) and provides:

- ``supernet``: its :class:`ofa.Supernet` subclass (elastic layers), with a tensor-free ``plan`` (search space,
  dense spec of any arch, analytic costs);
- ``dense``: its :class:`ofa.StaticNet` subclass, built from a dense spec with any layer factory and run to given
  depths (``run(x, depths)``): the extracted network, and the body of a runtime-slimmable network;
- ``latency_units(spec)`` and ``build_unit(unit)``: the timed pieces of a dense network (each keyed by every shape
  that changes its time) and how to build one as plain layers, for latency tables;
- ``timm_handles(model)`` / ``from_timm(model, ...)`` (optional): turning a timm model into a supernet.

Dense networks also name their (convolution, BatchNorm) pairs (``conv_bn_pairs()``) for folding. Generic code
finds a family by the ``family`` name a supernet, a dense network or a saved description carries
(:func:`ofa.registry.get_family`), never by testing that name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn


class Family:
    """One network family. Subclass it, set ``name``, ``supernet`` and ``dense``, and register an instance."""

    name: str = ""
    supernet: type | None = None
    dense: type | None = None
    timm_supported: str = ""  # what the timm importer accepts, for error messages ("" = no importer)

    def latency_units(self, spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The timed units of a dense spec, in order, as ``(key, unit)``; ``unit`` says how to build it."""
        raise NotImplementedError(f"the {self.name} family has no latency units")

    def build_unit(self, unit: Mapping[str, Any]) -> tuple[nn.Module, tuple[int, ...]]:
        """One unit as plain layers (BatchNorm unfolded) and its input shape ``(C, H, W)``."""
        raise NotImplementedError(f"the {self.name} family has no latency units")

    def timm_handles(self, model: Any) -> bool:
        """Whether the timm model name or instance ``model`` belongs to this family."""
        return False

    def from_timm(self, model: Any, **kwargs: Any) -> nn.Module:
        raise NotImplementedError(f"the {self.name} family has no timm importer")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
