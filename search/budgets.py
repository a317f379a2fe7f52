"""Device budgets: ``--budget macs=40M``, ``params=0.3M``, ``latency_ms=5@DEVICE`` or a ``devices.yaml``.

A device has one or more limits; an arch fits when every cost is <= its limit. MACs and params come from the
analytic cost model; latency from a device's lookup table (``ofa.latency.LatencyTable``), found with
``--lut DEVICE=PATH`` or at ``RUN/latency/DEVICE.json``. A device may run int8 (``precision: int8``): its latency
comes from its int8 table (``RUN/latency/DEVICE.int8.json``, ``ofa profile --int8``) and ``ofa deploy`` quantizes
it. A budget below the smallest subnet's cost is an error that names the smallest achievable cost.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ofa import Arch, OFAError
from ofa.latency import PRECISIONS, check_precision, table_key
from ofa.rundir import RunDir

KINDS = ("macs", "params", "latency_ms")
_SUFFIX = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Budget:
    """The limits of one device; ``None`` means no limit of that kind."""

    name: str
    macs: int | None = None
    params: int | None = None
    latency_ms: float | None = None
    latency_device: str | None = None
    precision: str = "float32"  # what the device runs: float32 or int8 (ofa.latency.PRECISIONS)

    @property
    def latency_key(self) -> str | None:
        """The latency table this budget is measured against: ``DEVICE`` for float32, ``DEVICE.int8`` for int8."""
        return None if self.latency_device is None else table_key(self.latency_device, self.precision)

    def limits(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in KINDS if getattr(self, k) is not None}

    def primary(self) -> str:
        """The cost kind the Pareto front and the device order use: latency, else MACs, else params."""
        for k in ("latency_ms", "macs", "params"):
            if getattr(self, k) is not None:
                return k
        raise AssertionError("a budget has at least one limit")

    def to_dict(self) -> dict:
        return {"macs": self.macs, "params": self.params, "latency_ms": self.latency_ms,
                "latency_device": self.latency_device, "precision": self.precision}

    def describe(self) -> str:
        parts = []
        if self.macs is not None:
            parts.append(f"macs<={self.macs / 1e6:.3g}M")
        if self.params is not None:
            parts.append(f"params<={self.params / 1e6:.3g}M")
        if self.latency_ms is not None:
            parts.append(f"latency<={self.latency_ms:g}ms@{self.latency_device}")
        if self.precision != "float32":
            parts.append(self.precision)
        return " ".join(parts)


def parse_number(text, what: str) -> float:
    """``40M`` -> 4e7, ``0.3M``, ``500k``, ``2G``, or a plain number."""
    if isinstance(text, bool):
        raise OFAError(f"{what}: expected a number like 40M, 0.3M or 500k, got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKMG]?)\s*", str(text))
        if not m:
            raise OFAError(f"{what}: expected a number like 40M, 0.3M or 500k, got {text!r}")
        value = float(m.group(1)) * _SUFFIX[m.group(2)]
    if value <= 0:
        raise OFAError(f"{what}: a budget must be positive, got {text!r}")
    return value


def _limit(budget: dict, kind: str, value, where: str, device: str) -> None:
    if kind == "precision":  # not a limit: what the device runs (the latency table it is budgeted against)
        budget["precision"] = check_precision(str(value).strip(), where)
        return
    if kind not in KINDS:
        raise OFAError(f"{where}: unknown budget kind {kind!r}; allowed: {list(KINDS)} (and precision: "
                       f"{' or '.join(PRECISIONS)})")
    if kind == "latency_ms":
        text = str(value)
        number, _, lat_device = text.partition("@")
        budget["latency_ms"] = parse_number(number, f"{where} latency_ms")
        budget["latency_device"] = lat_device.strip() or budget.get("latency_device") or device
    else:
        budget[kind] = int(parse_number(value, f"{where} {kind}"))


def parse_budget(text: str) -> Budget:
    """``[NAME:]KIND=VALUE[,KIND=VALUE...]``, e.g. ``macs=40M``, ``phone:latency_ms=5@pixel7,params=1M``, and
    ``precision=int8`` for a device that runs int8."""
    name, sep, spec = text.partition(":")
    if not sep or "=" in name:
        name, spec = "", text
    fields: dict = {}
    for part in spec.split(","):
        kind, eq, value = part.partition("=")
        if not eq:
            raise OFAError(f"budget {text!r}: expected KIND=VALUE (e.g. macs=40M, params=0.3M, "
                           f"latency_ms=5@DEVICE); allowed kinds: {list(KINDS)}")
        _limit(fields, kind.strip(), value.strip(), f"budget {text!r}", name or "")
    if not set(fields) - {"precision"}:
        raise OFAError(f"budget {text!r} has no limit; allowed kinds: {list(KINDS)}")
    if fields.get("latency_ms") is not None and not fields.get("latency_device"):
        raise OFAError(f"budget {text!r}: a latency budget names its device: latency_ms=5@DEVICE")
    if not name:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec).strip("_")
    elif not _NAME.match(name):
        raise OFAError(f"device name {name!r}: use letters, digits, '_', '-' or '.'")
    return Budget(name=name, **fields)


def load_devices(path: str | Path) -> list[Budget]:
    """A devices.yaml: ``devices: {NAME: {macs: 40M, params: 0.3M, latency_ms: 5, latency_device: pixel7,
    precision: int8}}`` (``latency_device`` defaults to the device's own name; ``latency_ms: 5@pixel7`` works too;
    ``precision`` is float32 or int8, default float32)."""
    from ofa.io import read_yaml

    path = Path(path)
    if not path.is_file():
        raise OFAError(f"devices file {path} does not exist")
    doc = read_yaml(path)
    devices = doc.get("devices") if isinstance(doc, Mapping) else None
    if not isinstance(devices, Mapping) or not devices:
        raise OFAError(f"{path}: expected a `devices:` mapping of NAME -> {{macs, params, latency_ms, "
                       "latency_device, precision}}")
    out = []
    for name, entry in devices.items():
        name = str(name)
        if not _NAME.match(name):
            raise OFAError(f"{path}: device name {name!r}: use letters, digits, '_', '-' or '.'")
        if not isinstance(entry, Mapping) or not entry:
            raise OFAError(f"{path}: device {name!r} needs at least one limit; allowed: {list(KINDS)}")
        fields: dict = {}
        if "latency_device" in entry:
            fields["latency_device"] = str(entry["latency_device"])
        for kind, value in entry.items():
            if kind != "latency_device":
                _limit(fields, str(kind), value, f"{path}: device {name!r}", name)
        if "latency_device" in fields and fields.get("latency_ms") is None:
            raise OFAError(f"{path}: device {name!r} has latency_device but no latency_ms")
        if not set(fields) - {"precision", "latency_device"}:
            raise OFAError(f"{path}: device {name!r} needs at least one limit; allowed: {list(KINDS)}")
        out.append(Budget(name=name, **fields))
    return out


class CostModel:
    """Every cost of an arch: MACs and params (analytic), and the latency on each device that has a table."""

    def __init__(self, net, tables: Mapping[str, object] | None = None) -> None:
        self.net = net
        self.tables = dict(tables or {})
        self._cache: dict[tuple[str, Arch], float] = {}

    def cost(self, arch: Arch, kind: str, device: str | None = None) -> float:
        if kind == "macs":
            return self.net.costs(arch)[0]
        if kind == "params":
            return self.net.costs(arch)[1]
        key = (device, arch)
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = float(self.tables[device].predict(self.net, arch))
        return value

    def costs(self, arch: Arch, budget: Budget) -> dict[str, float]:
        return {k: self.cost(arch, k, budget.latency_key) for k in budget.limits()}

    def fits(self, arch: Arch, budget: Budget) -> bool:
        return all(self.cost(arch, k, budget.latency_key) <= v for k, v in budget.limits().items())

    def violations(self, arch: Arch, budget: Budget) -> list[float]:
        """Relative excess per limit (<= 0 when within budget): Optuna's constraint values."""
        return [self.cost(arch, k, budget.latency_key) / v - 1.0 for k, v in budget.limits().items()]

    def check_feasible(self, budgets: Sequence[Budget]) -> None:
        """Raise for a budget below the smallest subnet's cost, naming the smallest achievable cost."""
        smallest = self.net.space.smallest()
        for b in budgets:
            for kind, limit in b.limits().items():
                least = self.cost(smallest, kind, b.latency_key)
                if least > limit:
                    raise OFAError(f"device {b.name!r}: budget {kind}={_show(kind, limit)} is below the smallest "
                                   f"subnet ({_show(kind, least)}); allowed: {kind} >= {_show(kind, least)}")


def _show(kind: str, value: float) -> str:
    return f"{value:.3g}ms" if kind == "latency_ms" else f"{value / 1e6:.4g}M"


def load_latency_tables(budgets: Sequence[Budget], run_dir: str | Path | None,
                        luts: Mapping[str, str] | None = None) -> dict[str, object]:
    """The latency table of every device a budget names: ``luts[DEVICE]`` or ``RUN/latency/DEVICE.json`` (for an
    int8 device ``luts[DEVICE.int8]`` or ``RUN/latency/DEVICE.int8.json``), keyed by ``Budget.latency_key``."""
    wanted = sorted({b.latency_key for b in budgets if b.latency_ms is not None})
    if not wanted:
        return {}
    try:
        from ofa.latency import LatencyTable
    except ImportError:
        raise OFAError("latency budgets need ofa.latency.LatencyTable, which this installation lacks; "
                       "use macs= or params= budgets") from None
    found = _known_tables(run_dir, luts)
    tables = {}
    for device in wanted:
        int8 = device.endswith(".int8")
        if device not in found:
            raise OFAError(f"unknown device {device!r} for a latency budget: no latency table; known devices: "
                           f"{sorted(found) or 'none'} (give --lut {device}=PATH or write "
                           f"RUN/latency/{device}.json with `ofa profile{' --int8' if int8 else ''}`)")
        tables[device] = LatencyTable.load(found[device])
        if tables[device].precision != ("int8" if int8 else "float32"):
            raise OFAError(f"the latency table {found[device]} for {device!r} times {tables[device].precision}, "
                           f"not {'int8' if int8 else 'float32'}: profile it with `ofa profile"
                           f"{' --int8' if int8 else ''}`")
    return tables


def _known_tables(run_dir: str | Path | None, luts: Mapping[str, str] | None) -> dict[str, str]:
    """DEVICE -> latency table path: ``luts`` first, then RUN/latency/DEVICE.json."""
    found = dict(luts or {})
    if run_dir is not None and RunDir(run_dir).latency.is_dir():
        for p in sorted(RunDir(run_dir).latency.glob("*.json")):
            found.setdefault(p.stem, str(p))
    return found


def latency_attrs(net, run_dir: str | Path | None,
                  luts: Mapping[str, str] | None = None) -> Callable[[Arch], dict[str, float]]:
    """For the dashboard: arch -> ``{"latency_ms@DEVICE": predicted ms}`` on every device with a table (``luts``,
    RUN/latency/*.json). Shown only, never used to decide, so a table that does not load or does not fit this
    supernet is left out with a warning instead of stopping the measurement."""
    from ofa.latency import LatencyTable

    tables = {}
    for device, path in _known_tables(run_dir, luts).items():
        try:
            table = LatencyTable.load(path)
            table.predict(net, net.space.smallest())
            table.predict(net, net.space.largest())
        except (OFAError, KeyError) as e:
            print(f"warning: latency table {path} left out of the measured table's attributes: {e}",
                  file=sys.stderr)
            continue
        tables[device] = table

    def attrs(arch: Arch) -> dict[str, float]:
        out = {}
        for device, table in tables.items():
            try:
                out[f"latency_ms@{device}"] = round(table.predict(net, arch), 4)
            except (OFAError, KeyError):  # a unit this table lacks: not shown
                pass
        return out

    return attrs


def parse_luts(items: Sequence[str] | None) -> dict[str, str]:
    out = {}
    for item in items or ():
        device, eq, path = item.partition("=")
        if not eq or not device or not path:
            raise OFAError(f"--lut {item!r}: expected DEVICE=PATH")
        if not Path(path).is_file():
            raise OFAError(f"--lut {item!r}: no file {path}")
        out[device] = path
    return out
