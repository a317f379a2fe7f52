"""The family interface: what the rest of the project asks of one network family.

A family (``ofa/families/<name>/``) knows one network structure. It writes its blocks once against a layer
factory (:mod:`ofa.factory`) and provides:

- ``supernet``: its :class:`ofa.Supernet` subclass (elastic layers), with a tensor-free ``plan`` (search space,
  dense spec of any arch, analytic costs);
- ``dense``: its :class:`ofa.StaticNet` subclass, built from a dense spec with any layer factory and run to given
  depths (``run(x, depths)``): the extracted network, and the body of a runtime-slimmable network;
- ``latency_units(spec)`` and ``build_unit(unit)``: the timed pieces of a dense network (each keyed by every shape
  that changes its time) and how to build one as plain layers, for latency tables;
- ``timm`` (optional): its timm importer module, behind ``timm_handles(model)`` / ``from_timm(model, ...)``.

Dense networks also name their (convolution, BatchNorm) pairs (``conv_bn_pairs()``) for folding. Generic code
finds a family by the ``family`` name a supernet, a dense network or a saved description carries
(:func:`ofa.registry.get_family`), never by testing that name.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from torch import nn


class Family:
    """One network family. Subclass it with its parts as class keywords and register an instance::

        class ResNetFamily(Family, name="resnet", supernet=OFAResNet, dense=StaticResNet, timm=resnet_timm): ...

    ``timm`` (optional) is the family's timm importer module: ``SUPPORTED`` (what it accepts, for error messages),
    ``handles(model)`` and ``from_timm(model, ...)``.
    """

    name: str = ""
    supernet: type | None = None
    dense: type | None = None
    timm: ModuleType | None = None

    def __init_subclass__(cls, name: str = "", supernet: type | None = None, dense: type | None = None,
                          timm: ModuleType | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name, cls.supernet, cls.dense, cls.timm = name, supernet, dense, timm

    @property
    def timm_supported(self) -> str:
        """What the timm importer accepts, for error messages ("" = no importer)."""
        return self.timm.SUPPORTED if self.timm is not None else ""

    def latency_units(self, spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The timed units of a dense spec, in order, as ``(key, unit)``; ``unit`` says how to build it."""
        raise NotImplementedError(f"the {self.name} family has no latency units")

    def build_unit(self, unit: Mapping[str, Any]) -> tuple[nn.Module, tuple[int, ...]]:
        """One unit as plain layers (BatchNorm unfolded) and its input shape ``(C, H, W)``."""
        raise NotImplementedError(f"the {self.name} family has no latency units")

    def timm_handles(self, model: Any) -> bool:
        """Whether the timm model name or instance ``model`` belongs to this family."""
        return self.timm is not None and self.timm.handles(model)

    def from_timm(self, model: Any, **kwargs: Any) -> nn.Module:
        if self.timm is None:
            raise NotImplementedError(f"the {self.name} family has no timm importer")
        return self.timm.from_timm(model, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
