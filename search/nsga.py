"""NSGA-II over categorical genes, a whole generation at a time.

The population is an integer matrix (one row per individual, one column per gene, each entry an index into that
gene's choices), so selection, crossover and mutation are a few array operations per generation instead of
per-trial bookkeeping. The algorithm is Deb et al.'s, with the operators of Optuna's ``NSGAIISampler`` (binary
tournaments on rank then crowding, uniform crossover, per-gene mutation with probability 1/genes by default) and
its constraint handling (constrained domination: a feasible individual beats an infeasible one, and of two
infeasible ones the smaller total violation wins).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def nondominated_ranks(objectives: np.ndarray, violation: np.ndarray) -> np.ndarray:
    """Front index of every row (0 = best) under constrained domination; ``objectives`` are minimised."""
    n = len(objectives)
    ranks = np.empty(n, dtype=np.int64)
    feasible = np.flatnonzero(violation <= 0)
    obj = objectives[feasible]
    if objectives.shape[1] == 1:  # one objective: the fronts are the distinct values, in order
        _, front_of = np.unique(obj[:, 0], return_inverse=True)
        ranks[feasible] = front_of.reshape(-1)
        rank = int(front_of.max()) + 1 if front_of.size else 0
        return _rank_infeasible(ranks, violation, rank)
    # dominates[i, j]: i is no worse in every objective and better in one
    no_worse = (obj[:, None, :] <= obj[None, :, :]).all(-1)
    better = (obj[:, None, :] < obj[None, :, :]).any(-1)
    dominated_by = (no_worse & better).sum(0)
    dominates = no_worse & better
    front, rank = np.flatnonzero(dominated_by == 0), 0
    remaining = dominated_by.copy()
    while front.size:
        ranks[feasible[front]] = rank
        remaining[front] = -1
        remaining -= dominates[front].sum(0)
        front, rank = np.flatnonzero(remaining == 0), rank + 1
    return _rank_infeasible(ranks, violation, rank)


def _rank_infeasible(ranks: np.ndarray, violation: np.ndarray, first: int) -> np.ndarray:
    """Infeasible rows come after every feasible front (from rank ``first``), ordered by total violation."""
    infeasible = np.flatnonzero(violation > 0)
    if infeasible.size:
        _, order = np.unique(violation[infeasible], return_inverse=True)
        ranks[infeasible] = first + order.reshape(-1)
    return ranks


def crowding(objectives: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Crowding distance of every row within its front (boundary rows: infinite)."""
    out = np.zeros(len(objectives))
    if objectives.shape[1] == 1:  # a front is one value: its first and last rows (index order) are the boundary
        order = np.lexsort((np.arange(len(ranks)), ranks))
        r = ranks[order]
        edge = np.ones(len(r), dtype=bool)
        edge[1:-1] = (r[1:-1] != r[:-2]) | (r[1:-1] != r[2:])
        out[order[edge]] = np.inf
        return out
    for r in np.unique(ranks):
        members = np.flatnonzero(ranks == r)
        if members.size <= 2:
            out[members] = np.inf
            continue
        for m in range(objectives.shape[1]):
            values = objectives[members, m]
            order = np.argsort(values, kind="stable")
            span = values[order[-1]] - values[order[0]]
            out[members[order[[0, -1]]]] = np.inf
            if span > 0:
                out[members[order[1:-1]]] += (values[order[2:]] - values[order[:-2]]) / span
    return out


class NSGA2:
    """Offspring and survivors of one generation; ``sizes[g]`` is the number of choices of gene ``g``."""

    def __init__(self, sizes: Sequence[int], population: int, seed: int = 0, mutation_prob: float | None = None,
                 crossover_prob: float = 0.9, swapping_prob: float = 0.5,
                 groups: Sequence[int] | None = None, group_share: float = 1.0) -> None:
        self.sizes = np.asarray(sizes, dtype=np.int64)
        # crossover swaps whole groups of genes (e.g. a stage's depth, width and blocks) when given
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64)
        self.group_share = group_share
        self.population = population
        self.rng = np.random.default_rng(seed)
        self.mutation_prob = 1.0 / max(1, len(sizes)) if mutation_prob is None else mutation_prob
        self.crossover_prob, self.swapping_prob = crossover_prob, swapping_prob

    def random(self, n: int) -> np.ndarray:
        return (self.rng.random((n, len(self.sizes))) * self.sizes).astype(np.int64)

    def _tournament(self, ranks: np.ndarray, crowd: np.ndarray, n: int) -> np.ndarray:
        a, b = self.rng.integers(0, len(ranks), (2, n))
        a_wins = (ranks[a] < ranks[b]) | ((ranks[a] == ranks[b]) & (crowd[a] >= crowd[b]))
        return np.where(a_wins, a, b)

    def offspring(self, parents: np.ndarray, ranks: np.ndarray, crowd: np.ndarray) -> np.ndarray:
        n, genes = self.population, len(self.sizes)
        first = parents[self._tournament(ranks, crowd, n)]
        second = parents[self._tournament(ranks, crowd, n)]
        swap = self.rng.random((n, genes)) < self.swapping_prob
        if self.groups is not None:
            by_group = (self.rng.random((n, int(self.groups.max()) + 1)) < self.swapping_prob)[:, self.groups]
            swap = np.where(self.rng.random((n, 1)) < self.group_share, by_group, swap)
        swap &= self.rng.random((n, 1)) < self.crossover_prob
        children = np.where(swap, second, first)
        mutate = self.rng.random((n, genes)) < self.mutation_prob
        return np.where(mutate, self.random(n), children)

    def perturb(self, rows: np.ndarray) -> np.ndarray:
        """Each row with one gene (of those with a choice) moved to another of its choices."""
        rows = rows.copy()
        free = np.flatnonzero(self.sizes > 1)
        if free.size == 0 or len(rows) == 0:
            return rows
        gene = free[self.rng.integers(0, free.size, len(rows))]
        step = 1 + (self.rng.random(len(rows)) * (self.sizes[gene] - 1)).astype(np.int64)
        rows[np.arange(len(rows)), gene] = (rows[np.arange(len(rows)), gene] + step) % self.sizes[gene]
        return rows

    def survivors(self, objectives: np.ndarray, violation: np.ndarray, keys: Sequence[Hashable]) -> np.ndarray:
        """Indices of the next population: the best fronts, then the least crowded of the last one; a repeated
        arch (same key) only after every distinct one, so the population keeps its diversity."""
        ranks = nondominated_ranks(objectives, violation)
        crowd = crowding(objectives, ranks)
        order = np.lexsort((-crowd, ranks))
        seen: set[Hashable] = set()
        first, repeats = [], []
        for i in order:
            (repeats if keys[i] in seen else first).append(i)
            seen.add(keys[i])
        return np.asarray((first + repeats)[:self.population])

    def rank(self, objectives: np.ndarray, violation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ranks = nondominated_ranks(objectives, violation)
        return ranks, crowding(objectives, ranks)
