"""Latency lookup tables: predicted batch-1 latency of any subnet on one device, without running it.

A table is made on the target device by ``ofa profile`` (``deploy.profile``): it times every distinct layer unit
(stem, residual block, classifier head) the search space can produce, at every resolution, in the form the
deployed network runs (BatchNorm folded, channels-last), at batch 1, keeping a low percentile of the runs (the
table's ``statistic``: what a unit costs when the device is not busy elsewhere). A subnet's latency is the sum of
its units' times, optionally passed through a linear correction fitted on measured whole subnets (the table says which
is used and how accurate it was). This module only reads and sums tables, so the search can budget latency
without importing ``deploy``.

File format (JSON, ``format: "ofa-latency/1"``)::

    {"format": "ofa-latency/1", "device": "laptop", "host": "...", "threads": 2, "batch": 1, "statistic": "p10_ms",
     "supernet": {"name": ..., "family": "resnet", "config": {...}},
     "units": {"<unit key>": <median ms>, ...},
     "correction": {"kind": "none"} | {"kind": "linear", "scale": a, "offset_ms": b},
     "accuracy": {"subnets": n, "mape_sum": ..., "mape_corrected": ..., ...}}
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import OFAError
from .io import read_json
from .space import Arch

FORMAT = "ofa-latency/1"


# -- units of a dense network -------------------------------------------------------------------------------------
def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def resnet_units(spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The timed units of a dense ResNet spec, in order: ``(key, unit)``; ``unit`` says how to build it.

    A unit's key names every shape that changes its time (channels, stride, projection, input size), so two
    subnets sharing a block shape share its measurement.
    """
    size, res = spec["resolution"], spec["resolution"]
    units = [(f"stem|{spec['stem_type']}|{spec['in_chans']}|{spec['stem']}|{res}",
              {"kind": "stem", "stem_type": spec["stem_type"], "in_chans": spec["in_chans"],
               "out": spec["stem"], "size": res})]
    if spec["stem_type"] == "conv7_pool":
        size = _conv_out(_conv_out(size, 7, 2, 3), 3, 2, 1)
    for stage in spec["stages"]:
        for c_in, mid, out, stride, downsample in stage:
            units.append((f"{spec['block']}|{c_in}|{mid}|{out}|{stride}|{int(bool(downsample))}|{size}",
                          {"kind": "block", "block": spec["block"], "in_c": c_in, "mid": mid, "out": out,
                           "stride": stride, "downsample": bool(downsample), "size": size}))
            size = _conv_out(size, 3, stride, 1)
    last = spec["stages"][-1][-1][2]
    units.append((f"head|{last}|{spec['num_classes']}|{size}",
                  {"kind": "head", "in_c": last, "num_classes": spec["num_classes"], "size": size}))
    return units


UNIT_FUNCTIONS = {"resnet": resnet_units}


def units_of_spec(spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    family = spec.get("family")
    if family not in UNIT_FUNCTIONS:
        raise OFAError(f"latency tables do not support the network family {family!r}; "
                       f"supported: {sorted(UNIT_FUNCTIONS)}")
    return UNIT_FUNCTIONS[family](spec)


def distinct_units(net) -> dict[str, dict[str, Any]]:
    """Every distinct unit any arch of ``net``'s space can produce (key -> unit).

    A unit depends only on its stage's and the previous stage's width, its own expand ratio and the
    resolution, never on depth; so the deepest archs with one expand ratio per stage, over every combination
    of resolution, stem and widths, cover the space.
    """
    if net.family not in UNIT_FUNCTIONS:
        raise OFAError(f"latency tables do not support the network family {net.family!r}; "
                       f"supported: {sorted(UNIT_FUNCTIONS)}")
    space = net.space
    out: dict[str, dict[str, Any]] = {}
    stems = space.stem if space.stem is not None else (None,)
    for resolution, stem, widths, expands in itertools.product(
            space.resolutions, stems, itertools.product(*space.widths), itertools.product(*space.expands)):
        arch = Arch(resolution=resolution, depths=space.max_depths, widths=widths, stem=stem,
                    expands=tuple((e,) * d for e, d in zip(expands, space.max_depths)))
        for key, unit in units_of_spec(net.plan.static_spec(arch)):
            out.setdefault(key, unit)
    return out


# -- the table -----------------------------------------------------------------------------------------------------
class LatencyTable:
    """Per-unit latencies of one device; ``predict(net, arch)`` gives a subnet's batch-1 latency in ms."""

    def __init__(self, device: str, units: Mapping[str, float], correction: Mapping[str, Any] | None = None,
                 meta: Mapping[str, Any] | None = None) -> None:
        self.device = device
        self.units = dict(units)
        self.correction = dict(correction or {"kind": "none"})
        self.meta = dict(meta or {})
        self._cache: dict[tuple[int, Arch], float] = {}

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
        correction = d.get("correction") or {"kind": "none"}
        if correction.get("kind") not in ("none", "linear"):
            raise OFAError(f"{path}: unknown correction {correction.get('kind')!r}; allowed: ['linear', 'none']")
        meta = {k: v for k, v in d.items() if k not in ("format", "device", "units", "correction")}
        return cls(str(d.get("device", path.stem)), units, correction, meta)

    def __iter__(self) -> Iterator[str]:
        return iter(self.units)

    def __repr__(self) -> str:
        return (f"LatencyTable(device={self.device!r}, units={len(self.units)}, "
                f"correction={self.correction.get('kind')!r})")
