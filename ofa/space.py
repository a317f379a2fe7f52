"""Search spaces and architectures.

An :class:`Arch` is one subnet of a supernet: its input resolution, and per stage its depth (the first ``d``
blocks are kept), its width multiplier (the residual stream shared by every block of the stage), and one expand
ratio per *active* block (the block's middle channels). Families with an elastic depthwise kernel also carry one
kernel size per active block, transformer families one attention head count per active block (the first ``h``
heads); families whose stem is not tied to the first stage carry a stem multiplier.

Archs are always canonical: they hold no genes for blocks beyond a stage's depth, so two descriptions of the same
subnet are equal and hash alike. A :class:`SearchSpace` lists the allowed values of every dimension; it samples,
validates, restricts (for progressive shrinking) and round-trips through JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .errors import ArchError

# Per-block dimensions that only some families have (``None`` in the others), besides the expand ratio
# every family has. Kernels must match between nested archs; heads nest like expands (fewer is contained).
OPTIONAL_PER_BLOCK = ("kernels", "heads")


@dataclass(frozen=True)
class Arch:
    """One architecture inside a search space. Build it with the space (``sample``, ``arch_from_dict``...)."""

    resolution: int
    depths: tuple[int, ...]
    widths: tuple[float, ...]
    expands: tuple[tuple[float, ...], ...]
    stem: float | None = None
    kernels: tuple[tuple[int, ...], ...] | None = None
    heads: tuple[tuple[int, ...], ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"resolution": self.resolution}
        if self.stem is not None:
            d["stem"] = self.stem
        d["depths"] = list(self.depths)
        d["widths"] = list(self.widths)
        d["expands"] = [list(e) for e in self.expands]
        for name in OPTIONAL_PER_BLOCK:
            if getattr(self, name) is not None:
                d[name] = [list(row) for row in getattr(self, name)]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    def key(self) -> str:
        """A short stable hash of the canonical arch (used to key measurements); computed once per arch, since
        the search asks for it on every candidate."""
        key = self.__dict__.get("_key")
        if key is None:
            key = hashlib.sha1(self.to_json().encode()).hexdigest()[:16]
            object.__setattr__(self, "_key", key)  # a cache, not a field: equality and hashing ignore it
        return key

    def __str__(self) -> str:
        return self.to_json()


def dedupe_choices(choices: Sequence[float], counts) -> tuple[float, ...]:
    """Multipliers that give the same channel counts (``counts(m)``) are one choice: the largest is kept."""
    kept: dict[Any, float] = {}
    for m in sorted(set(float(x) for x in choices), reverse=True):
        kept.setdefault(counts(m), m)
    return tuple(sorted(kept.values()))


def _as_rng(seed_or_rng: int | random.Random | None) -> random.Random:
    if isinstance(seed_or_rng, random.Random):
        return seed_or_rng
    if seed_or_rng is None or isinstance(seed_or_rng, int):
        return random.Random(seed_or_rng)
    raise TypeError(f"expected an int seed or a random.Random, got {type(seed_or_rng).__name__}")


def _match(value: Any, choices: Sequence, where: str) -> Any:
    """Return the allowed choice equal to ``value`` (floats compared with a tolerance) or raise ArchError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArchError(f"{where} must be a number, got {value!r}; allowed: {list(choices)}")
    for c in choices:
        if math.isclose(float(value), float(c), rel_tol=1e-9, abs_tol=1e-12):
            return c
    raise ArchError(f"{where}={value!r} is not allowed; allowed: {list(choices)}")


def _per_stage_list(d: Mapping, name: str, n: int) -> list:
    value = d[name]
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise ArchError(f"{name} must be a list with one entry per stage ({n} stages), got {value!r}")
    return list(value)


@dataclass(frozen=True)
class SearchSpace:
    """Allowed values per dimension. Per-stage dimensions hold one tuple of choices per stage, ascending."""

    resolutions: tuple[int, ...]
    depths: tuple[tuple[int, ...], ...]
    widths: tuple[tuple[float, ...], ...]
    expands: tuple[tuple[float, ...], ...]
    stem: tuple[float, ...] | None = None
    kernels: tuple[tuple[int, ...], ...] | None = None
    heads: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.depths)
        for name in ("widths", "expands", *OPTIONAL_PER_BLOCK):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"search space: {name} has {len(value)} stages, depths has {n}")
        for name, value in self._dimensions():
            if len(value) == 0:
                raise ArchError(f"search space: {name} has no allowed value")

    # -- structure -------------------------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def max_depths(self) -> tuple[int, ...]:
        return tuple(max(d) for d in self.depths)

    def _dimensions(self) -> list[tuple[str, tuple]]:
        dims: list[tuple[str, tuple]] = [("resolution", self.resolutions)]
        if self.stem is not None:
            dims.append(("stem", self.stem))
        for s in range(self.num_stages):
            dims += [(f"depths[{s}]", self.depths[s]), (f"widths[{s}]", self.widths[s]),
                     (f"expands[{s}]", self.expands[s])]
            dims += [(f"{name}[{s}]", getattr(self, name)[s]) for name in self.block_options()]
        return dims

    def block_options(self) -> list[str]:
        """The optional per-block dimensions this space has."""
        return [name for name in OPTIONAL_PER_BLOCK if getattr(self, name) is not None]

    def size(self) -> int:
        """The number of distinct architectures in the space."""
        total = len(self.resolutions) * (len(self.stem) if self.stem is not None else 1)
        for s in range(self.num_stages):
            per_block = len(self.expands[s]) * math.prod(len(getattr(self, n)[s]) for n in self.block_options())
            total *= len(self.widths[s]) * sum(per_block**d for d in self.depths[s])
        return total

    # -- special archs ---------------------------------------------------------------------------------------
    def uniform(self, pick) -> Arch:
        """The arch taking ``pick(choices)`` in every dimension (every block of a stage alike), e.g. ``max``."""
        depths = tuple(pick(d) for d in self.depths)
        return Arch(
            resolution=pick(self.resolutions),
            depths=depths,
            widths=tuple(pick(w) for w in self.widths),
            expands=tuple((pick(self.expands[s]),) * depths[s] for s in range(self.num_stages)),
            stem=pick(self.stem) if self.stem is not None else None,
            **{name: tuple((pick(getattr(self, name)[s]),) * depths[s] for s in range(self.num_stages))
               for name in self.block_options()},
        )

    def largest(self) -> Arch:
        return self.uniform(max)

    def smallest(self) -> Arch:
        return self.uniform(min)

    def sample(self, seed_or_rng: int | random.Random | None = None) -> Arch:
        """A uniformly random choice per dimension (depth first, then the genes of the active blocks)."""
        rng = _as_rng(seed_or_rng)
        depths = tuple(rng.choice(d) for d in self.depths)
        return Arch(
            resolution=rng.choice(self.resolutions),
            stem=rng.choice(self.stem) if self.stem is not None else None,
            depths=depths,
            widths=tuple(rng.choice(w) for w in self.widths),
            expands=tuple(tuple(rng.choice(self.expands[s]) for _ in range(depths[s]))
                          for s in range(self.num_stages)),
            **{name: tuple(tuple(rng.choice(getattr(self, name)[s]) for _ in range(depths[s]))
                           for s in range(self.num_stages))
               for name in self.block_options()},
        )

    # -- validation and JSON ---------------------------------------------------------------------------------
    def contains(self, arch: Arch) -> bool:
        try:
            self.validate(arch)
        except ArchError:
            return False
        return True

    def _holds_exactly(self, arch: Arch) -> bool:
        """Fast path: every gene of ``arch`` is exactly one of this space's choices (archs the space made are)."""
        if arch.resolution not in self.resolutions or len(arch.depths) != self.num_stages:
            return False
        if (arch.stem is None) != (self.stem is None) or (arch.stem is not None and arch.stem not in self.stem):
            return False
        optional = self.block_options()
        if any((getattr(arch, name) is None) != (name not in optional) for name in OPTIONAL_PER_BLOCK):
            return False
        for s, depth in enumerate(arch.depths):
            if depth not in self.depths[s] or arch.widths[s] not in self.widths[s] or len(arch.expands[s]) != depth:
                return False
            if any(e not in self.expands[s] for e in arch.expands[s]):
                return False
            for name in optional:
                row, choices = getattr(arch, name)[s], getattr(self, name)[s]
                if len(row) != depth or any(v not in choices for v in row):
                    return False
        return len(arch.widths) == self.num_stages and len(arch.expands) == self.num_stages

    def validate(self, arch: Arch | Mapping) -> Arch:
        """Return ``arch`` as a canonical :class:`Arch` of this space, or raise :class:`ArchError`."""
        if isinstance(arch, Arch):
            if self._holds_exactly(arch):
                return arch
            return self.arch_from_dict(arch.to_dict())
        if isinstance(arch, Mapping):
            return self.arch_from_dict(arch)
        raise ArchError(f"expected an Arch or an arch dict, got {type(arch).__name__}")

    def arch_from_dict(self, d: Mapping) -> Arch:
        if not isinstance(d, Mapping):
            raise ArchError(f"an arch must be a JSON object (dict), got {type(d).__name__}")
        expected = ["resolution", "depths", "widths", "expands", *self.block_options()]
        if self.stem is not None:
            expected.append("stem")
        unknown = sorted(set(d) - set(expected))
        if unknown:
            raise ArchError(f"unknown arch field {unknown[0]!r}; allowed fields: {sorted(expected)}")
        missing = [k for k in expected if k not in d]
        if missing:
            raise ArchError(f"arch is missing field {missing[0]!r}; required fields: {sorted(expected)}")
        n = self.num_stages
        resolution = _match(d["resolution"], self.resolutions, "resolution")
        stem = _match(d["stem"], self.stem, "stem") if self.stem is not None else None
        depths = tuple(_match(v, self.depths[s], f"depths[{s}]")
                       for s, v in enumerate(_per_stage_list(d, "depths", n)))
        widths = tuple(_match(v, self.widths[s], f"widths[{s}]")
                       for s, v in enumerate(_per_stage_list(d, "widths", n)))
        expands = self._per_block(d, "expands", depths, self.expands)
        optional = {name: self._per_block(d, name, depths, getattr(self, name)) for name in self.block_options()}
        return Arch(resolution=resolution, depths=depths, widths=widths, expands=expands, stem=stem, **optional)

    def _per_block(self, d: Mapping, name: str, depths: tuple[int, ...], choices) -> tuple[tuple, ...]:
        rows = _per_stage_list(d, name, self.num_stages)
        out = []
        for s, row in enumerate(rows):
            if not isinstance(row, (list, tuple)):
                raise ArchError(f"{name}[{s}] must be a list with one value per active block, got {row!r}")
            if len(row) != depths[s]:
                raise ArchError(f"{name}[{s}] has {len(row)} values but depths[{s}]={depths[s]}; "
                                f"give one value per active block")
            out.append(tuple(_match(v, choices[s], f"{name}[{s}][{b}]") for b, v in enumerate(row)))
        return tuple(out)

    def arch_from_json(self, text: str) -> Arch:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArchError(f"arch is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        return self.arch_from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"resolutions": list(self.resolutions)}
        if self.stem is not None:
            d["stem"] = list(self.stem)
        d["depths"] = [list(x) for x in self.depths]
        d["widths"] = [list(x) for x in self.widths]
        d["expands"] = [list(x) for x in self.expands]
        for name in self.block_options():
            d[name] = [list(x) for x in getattr(self, name)]
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> SearchSpace:
        def tuples(rows):
            return tuple(tuple(r) for r in rows)

        return cls(
            resolutions=tuple(d["resolutions"]),
            depths=tuples(d["depths"]),
            widths=tuples(d["widths"]),
            expands=tuples(d["expands"]),
            stem=tuple(d["stem"]) if d.get("stem") is not None else None,
            **{name: tuples(d[name]) for name in OPTIONAL_PER_BLOCK if d.get(name) is not None},
        )

    # -- sub-spaces ------------------------------------------------------------------------------------------
    def restrict(self, **allowed: Sequence | Sequence[Sequence]) -> SearchSpace:
        """A sub-space keeping only the given values.

        Keys: ``resolutions``, ``stem``, ``depths``, ``widths``, ``expands``, ``kernels``, ``heads``. A flat list
        applies to every stage (intersected with each stage's choices); a list of lists gives one list per stage.
        Values outside the space, or a stage left with nothing, raise :class:`ArchError`.
        """
        known = {"resolutions", "stem", "depths", "widths", "expands", *OPTIONAL_PER_BLOCK}
        unknown = sorted(set(allowed) - known)
        if unknown:
            raise ArchError(f"unknown sub-space dimension {unknown[0]!r}; allowed: {sorted(known)}")
        changes: dict[str, Any] = {}
        for name, values in allowed.items():
            if values is None:
                continue
            current = getattr(self, name)
            if current is None:
                raise ArchError(f"this search space has no elastic {name!r} dimension")
            if name in ("resolutions", "stem"):
                changes[name] = self._keep(name, current, values)
            elif _is_nested(values):
                if len(values) != self.num_stages:
                    raise ArchError(f"{name}: give one list per stage ({self.num_stages} stages), got {values!r}")
                changes[name] = tuple(self._keep(f"{name}[{s}]", current[s], v) for s, v in enumerate(values))
            else:
                changes[name] = tuple(self._keep(f"{name}[{s}]", c, values, flat=True)
                                      for s, c in enumerate(current))
        return replace(self, **changes)

    @staticmethod
    def _keep(where: str, choices: tuple, values: Any, flat: bool = False) -> tuple:
        if not isinstance(values, (list, tuple)):
            raise ArchError(f"{where}: expected a list of allowed values, got {values!r}")
        kept = []
        for v in values:
            try:
                kept.append(_match(v, choices, where))
            except ArchError:
                if not flat:
                    raise
        kept_sorted = tuple(sorted(set(kept)))
        if not kept_sorted:
            raise ArchError(f"{where}: none of {list(values)} is allowed; allowed: {list(choices)}")
        return kept_sorted

    def describe(self) -> str:
        """A few human-readable lines for ``ofa info``."""
        lines = [f"resolutions {list(self.resolutions)}"]
        if self.stem is not None:
            lines.append(f"stem width {list(self.stem)}")
        for s in range(self.num_stages):
            line = (f"stage {s}: depth {list(self.depths[s])}  width {list(self.widths[s])}  "
                    f"expand {list(self.expands[s])}")
            for name in self.block_options():
                line += f"  {name.rstrip('s')} {list(getattr(self, name)[s])}"
            lines.append(line)
        lines.append(f"{self.size():.3g} architectures")
        return "\n".join(lines)


def _is_nested(values: Any) -> bool:
    return isinstance(values, (list, tuple)) and len(values) > 0 and all(
        isinstance(v, (list, tuple)) for v in values)
