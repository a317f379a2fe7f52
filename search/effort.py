"""Search effort: how many candidates the search of one budget scores (``ofa search --effort``).

Kept free of numpy, torch and Optuna so that the CLI can list the levels without importing them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Effort:
    """How hard the search of one budget tries: ``population`` x ``generations`` candidates."""

    population: int
    generations: int
    # share of crossovers that swap whole stages (depth, width and blocks together) instead of single genes:
    # slower to converge, but it moves depth between stages, which a long search needs to find the best archs
    stage_crossover: float = 0.0

    @property
    def candidates(self) -> int:
        return self.population * self.generations

    def sweep(self) -> tuple[Effort, Effort]:
        """A sweep's (front, per-budget) sizes: one Pareto search over the cost (twice the population, 5/3 the
        generations), then a third of the generations per budget, started from the front."""
        front = Effort(2 * self.population, -(-5 * self.generations // 3), self.stage_crossover)
        return front, Effort(self.population, max(1, self.generations // 3), self.stage_crossover)


# Chosen with benchmarks/search_vs_ofa.py (seconds per budget on one CPU thread with a vectorised stand-in
# predictor, ofa_mbv3 at 224 px): quick ~0.3 s, default ~1 s (at least the once-for-all finder's median best in
# 1/4 of its time), thorough ~10 s (within 0.1 of the best any run found, 50,000-candidate runs included).
EFFORTS: dict[str, Effort] = {
    "quick": Effort(population=50, generations=40),
    "default": Effort(population=100, generations=60),
    "thorough": Effort(population=200, generations=250, stage_crossover=1.0),
}

# From this many budgets on one cost (MACs, params, or one device's latency), a search runs as a sweep (see
# Effort.sweep): on 40 MACs budgets it took 2/3 of the time of one search per budget (20 s vs 30 s) and found
# better subnets at 18 budgets, worse at 5; at 8 budgets the two take about the same time.
SWEEP_MIN_BUDGETS = 8
