"""The original once-for-all (OFA) evolution finder, re-implemented from its published description: what
benchmarks/search_vs_ofa.py compares ``ofa search`` with.

Population 100, 500 generations, the top 25% kept as parents, 50 children by mutation (each gene resampled with
probability 0.1) and 25 by uniform crossover, every arch drawn again until it fits the budget (rejection sampling).
Imported by search_vs_ofa.py after the ``search`` package (this folder's search.py would shadow it).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ofa import Arch
from search.genes import GeneSpace

if TYPE_CHECKING:
    from search_landscapes import Macs, Predictor


def ofa_finder(genes: GeneSpace, predictor: Predictor, macs: Macs, limit: float, *, seed: int,
               population: int = 100, generations: int = 500, parent_ratio: float = 0.25,
               mutation_ratio: float = 0.5, mutate_prob: float = 0.1) -> dict:
    """The OFA evolution finder on gene lists (every block's genes, also beyond its stage's depth). Parents keep
    their scores (the predictor is deterministic): each generation scores its 75 new children in one batch."""
    rng = random.Random(seed)
    names = [g.name for g in genes.genes]
    choices = [g.choices for g in genes.genes]
    n_parents = int(round(parent_ratio * population))
    n_mutated = int(round(mutation_ratio * population))
    n_crossed = population - n_parents - n_mutated
    draws = 0

    def feasible(make: Callable[[], list]) -> tuple[list, Arch]:
        """Apply ``make`` until its arch fits the budget (the OFA finder's rejection sampling)."""
        nonlocal draws
        while True:
            draws += 1
            values = make()
            arch = genes.arch_from_genes(dict(zip(names, values)))
            if macs(arch) <= limit:
                return values, arch

    def random_genes() -> list:
        return [rng.choice(c) for c in choices]

    def mutate(parent: list) -> list:
        return [rng.choice(c) if rng.random() < mutate_prob else v for v, c in zip(parent, choices)]

    def crossover(a: list, b: list) -> list:
        return [x if rng.random() < 0.5 else y for x, y in zip(a, b)]

    def scored(children: list[tuple[list, Arch]]) -> list[tuple[float, list, Arch]]:
        values = predictor([a for _, a in children])
        return [(float(s), g, a) for s, (g, a) in zip(values, children)]

    start = time.perf_counter()
    pool = scored([feasible(random_genes) for _ in range(population)])
    best = max(pool, key=lambda t: t[0])
    history = [(predictor.calls, best[0])]
    for _ in range(generations):
        parents = sorted(pool, key=lambda t: -t[0])[:n_parents]
        children = []
        for _ in range(n_mutated):
            p = rng.choice(parents)[1]
            children.append(feasible(lambda p=p: mutate(p)))
        for _ in range(n_crossed):
            p1, p2 = rng.choice(parents)[1], rng.choice(parents)[1]
            children.append(feasible(lambda p1=p1, p2=p2: crossover(p1, p2)))
        pool = parents + scored(children)
        best = max([best] + pool[n_parents:], key=lambda t: t[0])
        history.append((predictor.calls, best[0]))
    return {"best": best[0], "best_macs": macs(best[2]), "seconds": time.perf_counter() - start,
            "predictor_calls": predictor.calls, "predictor_batches": predictor.batches, "draws": draws,
            "macs_calls": macs.misses, "history": history}
