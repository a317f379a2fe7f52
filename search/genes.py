"""Genes: a search space as a flat list of categorical choices, and the fixed-length encoding of an arch.

Evolution needs every trial to carry every gene (Optuna's NSGA-II samples a parameter that is missing from some
trials at random, without evolving it), so a stage's block genes exist even beyond the stage's depth. An
:class:`ofa.Arch` holds only the active blocks' genes, so ``arch_from_genes`` truncates to the depth: two gene
sets that differ only in inactive genes give the same arch (and the same ``arch.key()``).

The predictor's encoding is one-hot per choice, with every inactive block's slots zero and the resolution
included, as in the once-for-all accuracy predictor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ofa import Arch, ArchError, SearchSpace

# The gene name prefix of each per-block dimension: "expand1.0", "kernel1.0", "heads1.0"
BLOCK_GENES = {"expands": "expand", "kernels": "kernel", "heads": "heads"}


@dataclass(frozen=True)
class Gene:
    name: str  # "resolution", "stem", "depth1", "width1", "expand1.0", "kernel1.0", "heads1.0"
    choices: tuple  # ascending
    stage: int | None = None
    block: int | None = None  # set for per-block genes: active only when block < depth of its stage


class GeneSpace:
    """The genes of a search space (optionally with narrowed choices, e.g. "contained in this arch")."""

    def __init__(self, space: SearchSpace, genes: Sequence[Gene] | None = None) -> None:
        self.space = space
        self.genes: tuple[Gene, ...] = tuple(genes) if genes is not None else tuple(self._all_genes(space))
        self._by_name = {g.name: g for g in self.genes}
        self._slots = {g.name: {c: i for i, c in enumerate(g.choices)} for g in self.genes}
        # one-hot layout of the encoding: the offset of each gene's first slot
        self.offsets: dict[str, int] = {}
        width = 0
        for g in self.genes:
            self.offsets[g.name] = width
            width += len(g.choices)
        self.width = width
        columns = {g.name: i for i, g in enumerate(self.genes)}
        n, space = self.space.num_stages, self.space
        self._columns = {
            "resolution": columns["resolution"], "stem": columns.get("stem"),
            "depth": [columns[f"depth{s}"] for s in range(n)], "width": [columns[f"width{s}"] for s in range(n)],
            "blocks": {dim: [[columns[f"{BLOCK_GENES[dim]}{s}.{b}"] for b in range(space.max_depths[s])]
                             for s in range(n)] for dim in _block_dims(space)}}
        # for canonical(): each block gene's column, its stage's depth column and the block's index
        blocks = [(i, g) for i, g in enumerate(self.genes) if g.block is not None]
        self._block_cols = np.array([i for i, _ in blocks], dtype=np.int64)
        self._block_depth_cols = np.array([columns[f"depth{g.stage}"] for _, g in blocks], dtype=np.int64)
        self._block_index = np.array([g.block for _, g in blocks], dtype=np.int64)
        self._depth_values = np.zeros((len(self.genes), max(len(g.choices) for g in self.genes)), dtype=np.int64)
        for i, g in enumerate(self.genes):
            if g.name.startswith("depth"):
                self._depth_values[i, :len(g.choices)] = g.choices
        # archs this gene space decodes remember their index row, so encode() can take the vectorised path
        self._layout = tuple((g.name, g.choices) for g in self.genes)
        self._first_slot = np.array([self.offsets[g.name] for g in self.genes], dtype=np.int64)

    @staticmethod
    def _all_genes(space: SearchSpace) -> list[Gene]:
        genes = [Gene("resolution", tuple(space.resolutions))]
        if space.stem is not None:
            genes.append(Gene("stem", tuple(space.stem)))
        for s in range(space.num_stages):
            genes.append(Gene(f"depth{s}", tuple(space.depths[s]), s))
            genes.append(Gene(f"width{s}", tuple(space.widths[s]), s))
            for b in range(space.max_depths[s]):
                genes += [Gene(f"{BLOCK_GENES[dim]}{s}.{b}", tuple(getattr(space, dim)[s]), s, b)
                          for dim in _block_dims(space)]
        return genes

    def __getitem__(self, name: str) -> Gene:
        return self._by_name[name]

    # -- genes <-> arch ----------------------------------------------------------------------------------------
    def arch_from_genes(self, genes: Mapping) -> Arch:
        """The canonical arch of a full gene assignment (inactive block genes are ignored).

        Gene values are the space's own choices, so the arch is built directly (the search decodes thousands of
        candidates; validating each through ``arch_from_dict`` cost more than breeding them)."""
        for g in self.genes:
            if genes[g.name] not in g.choices:
                raise ArchError(f"{g.name}={genes[g.name]!r} is not allowed; allowed: {list(g.choices)}")
        return self._build([genes[g.name] for g in self.genes])

    def arch_from_indices(self, row: Sequence[int]) -> Arch:
        """The canonical arch of one row of choice indices (one per gene, in order; as the search breeds them).
        The arch keeps its row (a cache, like its key), so encoding the archs a search bred is one array step."""
        arch = self._build([g.choices[i] for g, i in zip(self.genes, row)])
        object.__setattr__(arch, "_genes_row", (self._layout, np.asarray(row, dtype=np.int64)))
        return arch

    def canonical(self, rows: np.ndarray) -> np.ndarray:
        """Rows of choice indices with every inactive block gene (beyond its stage's depth) set to index 0: two
        rows are the same arch exactly when their canonical rows are equal."""
        return np.where(self._active(rows), rows, 0)

    def _active(self, rows: np.ndarray) -> np.ndarray:
        """Which genes of each row of choice indices are active (a block gene within its stage's depth)."""
        active = np.ones(rows.shape, dtype=bool)
        if self._block_cols.size:
            depths = self._depth_values[self._block_depth_cols, rows[:, self._block_depth_cols]]
            active[:, self._block_cols] = depths > self._block_index
        return active

    def _build(self, values: Sequence) -> Arch:
        """The arch of one value per gene (in gene order), by precomputed columns (no per-gene name lookups)."""
        c = self._columns
        depths = tuple(int(values[i]) for i in c["depth"])
        blocks = {dim: tuple(tuple(values[i] for i in cols[:d]) for cols, d in zip(stages, depths))
                  for dim, stages in c["blocks"].items()}
        return Arch(resolution=values[c["resolution"]], depths=depths, widths=tuple(values[i] for i in c["width"]),
                    stem=values[c["stem"]] if c["stem"] is not None else None, **blocks)

    def genes_from_arch(self, arch: Arch) -> dict:
        """A full gene assignment for ``arch``; inactive block genes take their first allowed choice."""
        out: dict = {}
        for g in self.genes:
            if g.name == "resolution":
                value = arch.resolution
            elif g.name == "stem":
                value = arch.stem
            elif g.block is None:
                value = (arch.depths if g.name.startswith("depth") else arch.widths)[g.stage]
            elif g.block < arch.depths[g.stage]:
                value = getattr(arch, _block_dim(g.name))[g.stage][g.block]
            else:
                value = g.choices[0]
            out[g.name] = _pick(value, g)
        return out

    # -- encoding --------------------------------------------------------------------------------------------
    def encode(self, archs: Sequence[Arch]) -> np.ndarray:
        """One row per arch: one-hot per gene, inactive blocks all zero. float32 (N, width)."""
        rows = self._remembered_rows(archs)
        if rows is not None:
            return self._encode_rows(rows)
        x = np.zeros((len(archs), self.width), dtype=np.float32)
        rows, cols = [], []
        for i, arch in enumerate(archs):
            for name, value in self._active_values(arch):
                slot = self._slots[name].get(value)  # exact choices; a float that only nears one goes the slow way
                rows.append(i)
                cols.append(self.offsets[name] + (slot if slot is not None else _index(value, self._by_name[name])))
        x[rows, cols] = 1.0
        return x

    def _remembered_rows(self, archs: Sequence[Arch]) -> np.ndarray | None:
        """The index rows of archs decoded by a gene space of this layout, or None if any arch lacks one."""
        rows, layout = [], None
        for arch in archs:
            remembered = arch.__dict__.get("_genes_row")
            if remembered is None:
                return None
            if remembered[0] is not layout:  # usually one layout object for a whole search
                if remembered[0] != self._layout:
                    return None
                layout = remembered[0]
            rows.append(remembered[1])
        return np.stack(rows) if rows else None

    def _encode_rows(self, rows: np.ndarray) -> np.ndarray:
        x = np.zeros((len(rows), self.width), dtype=np.float32)
        r, g = np.nonzero(self._active(rows))
        x[r, self._first_slot[g] + rows[r, g]] = 1.0
        return x

    def decode(self, row: np.ndarray) -> Arch:
        """The arch an encoding row describes (inverse of :meth:`encode`)."""
        genes = {}
        for g in self.genes:
            slots = row[self.offsets[g.name]: self.offsets[g.name] + len(g.choices)]
            genes[g.name] = g.choices[int(np.argmax(slots))] if slots.max() > 0 else g.choices[0]
        return self.arch_from_genes(genes)

    def _active_values(self, arch: Arch):
        yield "resolution", arch.resolution
        if arch.stem is not None:
            yield "stem", arch.stem
        for s in range(len(arch.depths)):
            yield f"depth{s}", arch.depths[s]
            yield f"width{s}", arch.widths[s]
            for b in range(arch.depths[s]):
                for dim, prefix in BLOCK_GENES.items():
                    if getattr(arch, dim) is not None:
                        yield f"{prefix}{s}.{b}", getattr(arch, dim)[s][b]

    # -- narrowing -------------------------------------------------------------------------------------------
    def contained_in(self, parent: Arch) -> GeneSpace:
        """Genes of the archs nested inside ``parent``: every depth, width, stem, expand and head-count choice <=
        the parent's, the same kernels; the resolution stays free (a slimmable network takes any input size)."""
        parent_genes = self.genes_from_arch(parent)
        narrowed = []
        for g in self.genes:
            value = parent_genes[g.name]
            active_in_parent = g.block is None or g.block < parent.depths[g.stage]
            if g.name == "resolution" or not active_in_parent:
                choices = g.choices  # free, or inactive in every contained arch (depth <= parent's)
            elif g.name.startswith("kernel"):
                choices = (value,)
            else:
                choices = tuple(c for c in g.choices if c <= value)
            narrowed.append(Gene(g.name, choices, g.stage, g.block))
        return GeneSpace(self.space, narrowed)

    def allows(self, genes: Mapping) -> bool:
        """True if every gene value of a full assignment is one of this gene space's choices."""
        try:
            for gene in self.genes:
                _index(genes[gene.name], gene)  # raises when the value is not a choice
            return True
        except (KeyError, ArchError):
            return False

    def size(self) -> int:
        """Number of distinct gene assignments (an upper bound on the distinct archs)."""
        return int(np.prod([len(g.choices) for g in self.genes], dtype=np.float64))


def is_contained(child: Arch, parent: Arch) -> bool:
    """True if ``child`` is a sub-network of ``parent`` (the nesting rule of :meth:`GeneSpace.contained_in`)."""
    if (child.stem or 0) > (parent.stem or 0):
        return False
    for s in range(len(child.depths)):
        if child.depths[s] > parent.depths[s] or child.widths[s] > parent.widths[s]:
            return False
        for b in range(child.depths[s]):
            if child.expands[s][b] > parent.expands[s][b]:
                return False
            if child.kernels is not None and child.kernels[s][b] != parent.kernels[s][b]:
                return False
            if child.heads is not None and child.heads[s][b] > parent.heads[s][b]:
                return False
    return True


def _block_dims(space: SearchSpace) -> list[str]:
    """The space's per-block dimensions, in gene order: the expand ratio, then its options (kernel, heads)."""
    return ["expands", *space.block_options()]


def _block_dim(gene_name: str) -> str:
    """The Arch field of a per-block gene ("kernel1.0" -> "kernels")."""
    prefix = gene_name.rstrip("0123456789.")
    return next(dim for dim, p in BLOCK_GENES.items() if p == prefix)


def _index(value, gene: Gene) -> int:
    for i, c in enumerate(gene.choices):
        if abs(float(c) - float(value)) <= 1e-9 * max(1.0, abs(float(c))):
            return i
    raise ArchError(f"{gene.name}={value!r} is not allowed; allowed: {list(gene.choices)}")


def _pick(value, gene: Gene):
    return gene.choices[_index(value, gene)]
