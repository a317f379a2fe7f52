"""Registries: supernet names (``create_supernet``) and families (to rebuild saved networks).

A registered supernet is a family class plus default constructor arguments, like a timm model entry.
"""

from __future__ import annotations

from typing import Any

from .errors import OFAError

_SUPERNETS: dict[str, tuple[type, dict[str, Any]]] = {}
_FAMILIES: dict[str, type] = {}
_STATIC: dict[str, type] = {}
BUILTIN_FAMILIES = ("ofa.resnet", "ofa.mbv3")


def _ensure_builtin() -> None:
    """Import the built-in families (they register themselves); ``import ofa`` itself stays lazy."""
    import importlib

    for module in BUILTIN_FAMILIES:
        importlib.import_module(module)


def register_family(cls: type) -> type:
    """Class decorator: make a supernet family loadable by its ``family`` name."""
    _FAMILIES[cls.family] = cls
    return cls


def register_static(cls: type) -> type:
    """Class decorator: make a dense (extracted) network class loadable by its ``family`` name."""
    _STATIC[cls.family] = cls
    return cls


def register_supernet(name: str, family_cls: type, **defaults: Any) -> None:
    _SUPERNETS[name] = (family_cls, defaults)


def list_supernets() -> list[str]:
    _ensure_builtin()
    return sorted(_SUPERNETS)


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


def family_class(family: str) -> type:
    _ensure_builtin()
    if family not in _FAMILIES:
        raise OFAError(f"unknown supernet family {family!r}; known: {sorted(_FAMILIES)}")
    return _FAMILIES[family]


def static_class(family: str) -> type:
    _ensure_builtin()
    if family not in _STATIC:
        raise OFAError(f"unknown network family {family!r}; known: {sorted(_STATIC)}")
    return _STATIC[family]
