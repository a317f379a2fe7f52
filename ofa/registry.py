"""Registries: network families (to rebuild saved networks and reach their hooks) and supernet names
(``create_supernet``, like timm's model registry: a family's supernet class plus default constructor arguments).

Adding a family is one folder under ``ofa/families/`` plus one line in :data:`BUILTIN_FAMILIES`.
"""

from __future__ import annotations

from typing import Any

from .errors import OFAError

BUILTIN_FAMILIES = ("ofa.families.resnet", "ofa.families.mbv3", "ofa.families.vit")

_SUPERNETS: dict[str, tuple[type, dict[str, Any]]] = {}
_FAMILIES: dict[str, Any] = {}


def _ensure_builtin() -> None:
    """Import the built-in families (they register themselves); ``import ofa`` itself stays lazy."""
    import importlib

    for module in BUILTIN_FAMILIES:
        importlib.import_module(module)


def register_family(family):
    """Make a family (an :class:`ofa.family.Family` instance) known by its ``name``; returns it."""
    _FAMILIES[family.name] = family
    return family


def register_supernet(name: str, family_cls: type, **defaults: Any) -> None:
    _SUPERNETS[name] = (family_cls, defaults)


def list_supernets() -> list[str]:
    _ensure_builtin()
    return sorted(_SUPERNETS)


def list_families() -> list:
    _ensure_builtin()
    return [_FAMILIES[name] for name in sorted(_FAMILIES)]


def supernet_entry(name: str) -> tuple[type, dict[str, Any]]:
    _ensure_builtin()
    if name not in _SUPERNETS:
        raise OFAError(f"unknown supernet {name!r}; available: {', '.join(list_supernets())}")
    cls, defaults = _SUPERNETS[name]
    return cls, dict(defaults)


def create_supernet(name: str, **kwargs: Any):
    """Build a registered supernet, e.g. ``create_supernet("ofa_resnet_tiny", num_classes=10, in_chans=1)``."""
    cls, config = supernet_entry(name)
    unknown = sorted(set(kwargs) - set(cls.config_keys))
    if unknown:
        raise OFAError(f"unknown argument {unknown[0]!r} for supernet {name!r}; allowed: {sorted(cls.config_keys)}")
    config.update(kwargs)
    return cls(name=name, **config)


def get_family(name: str):
    """The registered :class:`ofa.family.Family` called ``name`` (what networks and descriptions carry)."""
    _ensure_builtin()
    if name not in _FAMILIES:
        raise OFAError(f"unknown network family {name!r}; known: {sorted(_FAMILIES)}")
    return _FAMILIES[name]


def family_class(family: str) -> type:
    """The supernet class of a family."""
    return get_family(family).supernet


def static_class(family: str) -> type:
    """The dense (extracted) network class of a family."""
    return get_family(family).dense
