"""``RUN/search/selected.json``: the subnet the search chose for each device, what ``ofa deploy`` deploys.

Written by ``ofa search`` (merged with an earlier search's other devices), read by ``ofa deploy`` and the demo.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from ..errors import OFAError
from .paths import RunDir
from .record import FileRecord, Record


@dataclass(kw_only=True)
class SelectedDevice(Record):
    """One device's choice: its budget, the arch (``Arch.to_dict()``), its costs and top-1 as the search saw them."""

    budget: dict[str, Any] | None = None  # Budget.to_dict(): macs, params, latency_ms, latency_device, precision
    arch: dict[str, Any] | None = None
    macs: int | None = None
    params: int | None = None
    latency_ms: float | None = None  # predicted by the device's latency table, when it has one
    predicted: dict[str, Any] | None = None  # {"metric": "top1" | ..., "value": the predictor's estimate}
    measured: dict[str, Any] | None = None  # test split: {"split", "top1", "ci_low", "ci_high", "loss", "n"}
    latency_measured: dict[str, Any] | None = None  # the search's verification of a latency budget

    @property
    def precision(self) -> Any:
        """The precision its budget asks for (float32 when it names none); checked by whoever uses it."""
        return (self.budget or {}).get("precision") or "float32"


@dataclass(kw_only=True)
class Selection(FileRecord):
    """The devices of one or more searches, in ``order`` (a nested chain: smallest first)."""

    FILE: ClassVar[str] = "selected.json"
    # Its top-level keys are a contract (deploy, the demo and users read them): format 1 stays implicit.
    WRITES_FORMAT_1: ClassVar[bool] = False

    supernet: str = "supernet.safetensors"  # relative to the run directory
    nested: bool = False  # every device's subnet contains the previous one's (one chain, never merged)
    order: list[str] = field(default_factory=list)
    devices: dict[str, SelectedDevice]

    @classmethod
    def _decode(cls, key: str, value: Any, where: str) -> Any:
        if key != "devices":
            return value
        if not isinstance(value, Mapping):
            raise OFAError(f"{where} lists no devices (expected a 'devices' object)")
        return {name: SelectedDevice.from_dict(entry, f"{where}: device {name!r}") for name, entry in value.items()}

    def _encode(self, key: str, value: Any) -> Any:
        return {name: d.to_dict() for name, d in value.items()} if key == "devices" else value

    @classmethod
    def read_run(cls, run: str | os.PathLike, hint: str = "run `ofa search` again") -> Selection:
        """``RUN/search/selected.json``."""
        return cls.read(RunDir(run).selection, hint)

    def ordered(self) -> list[str]:
        """Every device: those in ``order`` first, then any the order does not name."""
        return list(self.order) + [d for d in self.devices if d not in self.order]

    def merge(self, old: Selection | None) -> Selection:
        """This selection with ``old``'s other devices kept (after these, in their order). A nested chain is one
        decision over all its devices: it is never merged (``search.selection.check_merge`` refuses first)."""
        if old is None or self.nested or old.nested:
            return self
        kept = [name for name in old.ordered() if name not in self.devices]
        merged = replace(self, order=list(self.order) + kept,
                         devices={**self.devices, **{name: old.devices[name] for name in kept}})
        object.__setattr__(merged, "_absent", self._absent - {"order", "devices"})
        return merged
