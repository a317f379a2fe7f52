"""The training configs shipped inside the package (``ofa train --config tiny_cpu``): an installed ofa-supernet has
no repository ``configs/`` folder, so the demo and users read the same YAML files from here."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from ..errors import OFAError


def names() -> list[str]:
    """The shipped config names, without ``.yaml``."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


def path(name: str) -> Path:
    """The file of the shipped config ``name`` (``tiny_cpu`` or ``tiny_cpu.yaml``)."""
    stem = name[:-5] if name.endswith(".yaml") else name
    if stem not in names():
        raise OFAError(f"no shipped config named {name!r}; shipped: {', '.join(names())}")
    return Path(str(resources.files(__name__) / f"{stem}.yaml"))


def resolve(spec: str | os.PathLike) -> Path:
    """A config file path as given, else the shipped config of that name; an error names both options."""
    given = Path(spec)
    if given.is_file():
        return given
    stem = given.name[:-5] if given.name.endswith(".yaml") else given.name
    if given.parent == Path(".") and stem in names():
        return path(stem)
    raise OFAError(f"config file {str(spec)!r} does not exist; give a YAML file or a shipped config name "
                   f"({', '.join(names())})")
