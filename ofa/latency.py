"""Latency lookup tables: predicted batch-1 latency of any subnet on one device, without running it.

A table is made on the target device by ``ofa profile`` (``deploy.profile``): it times every distinct layer unit
(its family's units: stem, blocks, head) the search space can produce, at every resolution, in the form the
deployed network runs (BatchNorm folded, channels-last), at batch 1, keeping a low percentile of the runs (the
``unit_statistic``: steady where a median jumps between a machine's fast and slow modes). A subnet's latency is the
sum of its units' times passed through a linear correction fitted on measured whole subnets' medians (the table's
``statistic``: what a latency budget bounds and ``ofa deploy`` reports, at the table's thread count); the table says
whether the correction is used and how accurate it was. This module only reads and sums tables, so the search can
budget latency without importing ``deploy``.

A table also records the runtime and precision it timed: ``torch`` / ``float32`` (``ofa profile``) or
``onnxruntime`` / ``int8`` (``ofa profile --int8``: the statically quantized ONNX form ``ofa deploy --int8``
writes). Tables made before these fields existed are torch float32 tables. An int8 device is budgeted against its
``DEVICE.int8`` table (``RUN/latency/DEVICE.int8.json``), a float32 device against ``DEVICE``.

File format (JSON, ``format: "ofa-latency/1"``)::

    {"format": "ofa-latency/1", "device": "laptop", "host": "...", "threads": 2, "batch": 1, "statistic": "median_ms",
     "unit_statistic": "p10_ms", "runtime": "torch", "precision": "float32", "supernet": {"name": ..., "family": "resnet", "config": {...}},
     "units": {"<unit key>": <p10 ms>, ...},
     "correction": {"kind": "none"} | {"kind": "linear", "scale": a, "offset_ms": b},
     "accuracy": {"subnets": n, "mape_sum": ..., "mape_corrected": ..., ...}}
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from .errors import OFAError
from .io import read_json
from .registry import get_family
from .space import Arch

FORMAT = "ofa-latency/1"
PRECISIONS = ("float32", "int8")  # what a device runs; int8 is ofa deploy's statically quantized ONNX model


def check_precision(value: Any, where: str) -> str:
    """``value`` if it is a known precision, else an error naming ``where`` and the allowed values."""
    if value not in PRECISIONS:
        raise OFAError(f"{where}: precision {value!r} is not supported; allowed: {', '.join(PRECISIONS)}")
    return value


def table_key(device: str, precision: str = "float32") -> str:
    """The name a device's table goes by for one precision: ``DEVICE`` (float32) or ``DEVICE.int8``; its file is
    ``RUN/latency/<key>.json``."""
    return device if precision == "float32" else f"{device}.{precision}"


# -- units of a dense network -------------------------------------------------------------------------------------
def units_of_spec(spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The timed units of a dense spec, in order, from its family (:meth:`ofa.family.Family.latency_units`)."""
    return get_family(spec.get("family")).latency_units(spec)


def distinct_units(net) -> dict[str, dict[str, Any]]:
    """Every distinct unit any arch of ``net``'s space can produce (key -> unit).

    A block's unit depends on the resolution, the stem, its own stage's width, expand and per-block options
    (kernel, head count), and (for a stage's first block) the previous stage's width; never on depth or on other
    stages. So, per stage, the deepest arch with one (previous width, width, expand, options) combination,
    everything else largest, over every resolution and stem, covers the space in a few hundred specs instead of
    the product of all stages.
    """
    space, largest = net.space, net.space.largest()
    out: dict[str, dict[str, Any]] = {}
    stems = space.stem if space.stem is not None else (None,)
    optional = space.block_options()
    for resolution, stem, s in itertools.product(space.resolutions, stems, range(space.num_stages)):
        previous = space.widths[s - 1] if s > 0 else (largest.widths[0],)
        per_block = [space.expands[s]] + [getattr(space, name)[s] for name in optional]
        for w_prev, w, *values in itertools.product(previous, space.widths[s], *per_block):
            widths = list(largest.widths)
            if s > 0:
                widths[s - 1] = w_prev
            widths[s] = w
            rows = {name: tuple((v,) * largest.depths[s] if i == s else row
                                for i, row in enumerate(getattr(largest, name)))
                    for name, v in zip(["expands", *optional], values)}
            arch = replace(largest, resolution=resolution, stem=stem, widths=tuple(widths), **rows)
            for key, unit in units_of_spec(net.plan.static_spec(arch)):
                out.setdefault(key, unit)
    return out


class LatencyTable:
    """Per-unit latencies of one device; ``predict(net, arch)`` gives a subnet's batch-1 latency in ms."""

    def __init__(self, device: str, units: Mapping[str, float], correction: Mapping[str, Any] | None = None,
                 meta: Mapping[str, Any] | None = None) -> None:
        self.device = device
        self.units = dict(units)
        self.correction = dict(correction or {"kind": "none"})
        self.meta = dict(meta or {})
        self._cache: dict[tuple[int, Arch], float] = {}

    @property
    def precision(self) -> str:
        """What the table timed: ``float32`` or ``int8`` (tables made before the field: float32)."""
        return self.meta.get("precision", "float32")

    @property
    def runtime(self) -> str:
        """Where the table timed: ``torch`` or ``onnxruntime`` (tables made before the field: torch)."""
        return self.meta.get("runtime", "torch")

    # -- prediction ----------------------------------------------------------------------------------------------
    def sum_units(self, spec: Mapping[str, Any]) -> float:
        """The plain sum of the units of a dense spec (ms), before any correction."""
        total = 0.0
        for key, _ in units_of_spec(spec):
            ms = self.units.get(key)
            if ms is None:
                raise OFAError(f"the latency table for device {self.device!r} has no entry for unit {key!r}; "
                               f"it was profiled for supernet {self.meta.get('supernet', {}).get('name')!r}: "
                               "profile this supernet with `ofa profile`")
            total += ms
        return total

    def correct(self, summed_ms: float) -> float:
        if self.correction.get("kind") == "linear":
            summed_ms = self.correction["scale"] * summed_ms + self.correction["offset_ms"]
        return max(summed_ms, 1e-6)

    def predict(self, net, arch: Arch | Mapping | None = None) -> float:
        """Predicted batch-1 latency (ms, > 0) of ``arch`` of the supernet ``net`` (or of a dense network)."""
        if not hasattr(net, "plan"):  # an extracted dense network carries its own spec
            return self.correct(self.sum_units(net.spec))
        arch = net.active_arch if arch is None else arch
        if not isinstance(arch, Arch):
            arch = net.space.validate(arch)
        cache_key = (id(net.plan), arch)
        cached = self._cache.get(cache_key)
        if cached is None:
            cached = self.correct(self.sum_units(net.plan.static_spec(net.space.validate(arch))))
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[cache_key] = cached
        return cached

    def rescaled(self, ratio: float, session: Mapping[str, Any]) -> LatencyTable:
        """This table with every prediction multiplied by ``ratio``: the machine now runs at ``ratio`` times the
        speed it was profiled at (``session`` says how that was measured; kept in ``meta``)."""
        c = self.correction
        if c.get("kind") == "linear":
            correction = {**c, "scale": c["scale"] * ratio, "offset_ms": c["offset_ms"] * ratio}
        else:
            correction = {"kind": "linear", "scale": ratio, "offset_ms": 0.0}
        return LatencyTable(self.device, self.units, correction, {**self.meta, "session": dict(session)})

    # -- files ---------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "device": self.device, **self.meta, "correction": self.correction,
                "units": self.units}

    def save(self, path: str | os.PathLike) -> Path:
        from .io import atomic_write

        path = Path(path)
        text = json.dumps(self.to_dict(), indent=1)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        path = Path(path)
        if not path.is_file():
            raise OFAError(f"no latency table {path}; make one on the target device with "
                           "`ofa profile --supernet NAME --out PATH`")
        d = read_json(path, hint="the latency table may be truncated")
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise OFAError(f"{path} is not a latency table (format {FORMAT!r} expected)")
        units = d.get("units")
        if not isinstance(units, dict) or not units or not all(
                isinstance(v, (int, float)) and v > 0 for v in units.values()):
            raise OFAError(f"{path}: 'units' must map unit names to positive times in ms")
        if "precision" in d:
            check_precision(d["precision"], str(path))
        correction = d.get("correction") or {"kind": "none"}
        if correction.get("kind") not in ("none", "linear"):
            raise OFAError(f"{path}: unknown correction {correction.get('kind')!r}; allowed: ['linear', 'none']")
        meta = {k: v for k, v in d.items() if k not in ("format", "device", "units", "correction")}
        return cls(str(d.get("device", path.stem)), units, correction, meta)

    def __iter__(self) -> Iterator[str]:
        return iter(self.units)

    def __repr__(self) -> str:
        return (f"LatencyTable(device={self.device!r}, units={len(self.units)}, runtime={self.runtime!r}, "
                f"precision={self.precision!r}, correction={self.correction.get('kind')!r})")
