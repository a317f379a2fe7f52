"""Evolutionary search with Optuna's NSGA-II over the genes of a search space, scored by a predictor.

Every trial suggests every gene, also the genes of blocks beyond their stage's depth (NSGA-II samples a parameter
missing from some trials at random, without evolution); the arch is then canonicalised, and archs that differ
only in inactive genes share one cached score. The study lives in memory and runs a generation at a time: ask a
whole population, score the new archs in one batch, tell.

Two modes: ``constrained`` maximises the predicted score under one device's limits (``Trial.set_constraint``:
constrained domination, so the best feasible trial is never over budget) and ``pareto`` maximises the score while
minimising one cost, giving the front for all budgets in one run.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import optuna

from ofa import Arch, ArchError

from .genes import GeneSpace

MODES = ("constrained", "pareto")


@dataclass
class Evaluated:
    arch: Arch
    score: float  # higher is better
    costs: tuple[float, ...] = ()  # the constrained costs' relative excess (constrained) or the cost (pareto)
    feasible: bool = True


@dataclass
class EvolutionResult:
    evaluated: dict[str, Evaluated]  # by arch.key(): every distinct arch the search scored
    history: list[float] = field(default_factory=list)  # best feasible score after each generation
    trials: int = 0
    seconds: float = 0.0

    def best(self, accept: Callable[[Arch], bool] | None = None) -> Evaluated | None:
        top = self.top(1, accept)
        return top[0] if top else None

    def top(self, k: int, accept: Callable[[Arch], bool] | None = None) -> list[Evaluated]:
        """The ``k`` best-scored feasible distinct archs (``accept`` filters further), best first."""
        pool = [e for e in self.evaluated.values() if e.feasible and (accept is None or accept(e.arch))]
        return sorted(pool, key=lambda e: (-e.score, e.arch.key()))[:k]


def evolve(genes: GeneSpace, score: Callable[[list[Arch]], np.ndarray], *, generations: int = 40,
           population: int = 50, mode: str = "constrained",
           violations: Callable[[Arch], Sequence[float]] | None = None,
           cost: Callable[[Arch], float] | None = None, seeds: Sequence[Arch] = (), seed: int = 0,
           mutation_prob: float | None = None, crossover_prob: float = 0.9, swapping_prob: float = 0.5,
           log: Callable[[str], None] | None = None, label: str = "") -> EvolutionResult:
    """Run NSGA-II for ``generations`` x ``population`` trials.

    ``score(archs)`` returns one value per arch (higher is better) and is called once per generation on the
    archs not seen before. ``violations(arch)`` gives constraint values (<= 0 is feasible) in constrained mode;
    ``cost(arch)`` is the second objective in pareto mode.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "pareto" and cost is None:
        raise ValueError("pareto mode needs a cost function")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.NSGAIISampler(population_size=population, mutation_prob=mutation_prob,
                                            crossover_prob=crossover_prob, swapping_prob=swapping_prob, seed=seed)
    directions = ["maximize"] if mode == "constrained" else ["maximize", "minimize"]
    study = optuna.create_study(directions=directions, sampler=sampler)
    for a in seeds:  # known-good starting points; those outside a narrowed gene space are skipped
        try:
            study.enqueue_trial(genes.genes_from_arch(a))
        except ArchError:
            pass
    distributions = [(g.name, g.choices) for g in genes.genes]
    result = EvolutionResult(evaluated={})
    best = -np.inf
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for generation in range(generations):
            trials = [study.ask() for _ in range(population)]
            archs = [genes.arch_from_genes({name: t.suggest_categorical(name, choices)
                                            for name, choices in distributions}) for t in trials]
            new = list({a.key(): a for a in archs if a.key() not in result.evaluated}.values())
            if new:
                values = np.asarray(score(new), dtype=np.float64)
                for a, v in zip(new, values):
                    e = Evaluated(a, float(v))
                    if mode == "constrained" and violations is not None:
                        e.costs = tuple(float(c) for c in violations(a))
                        e.feasible = all(c <= 0 for c in e.costs)
                    elif mode == "pareto":
                        e.costs = (float(cost(a)),)
                    result.evaluated[a.key()] = e
            for t, a in zip(trials, archs):
                e = result.evaluated[a.key()]
                if mode == "constrained":
                    for i, c in enumerate(e.costs):
                        t.set_constraint(f"limit{i}", c)
                    study.tell(t, e.score)
                else:
                    study.tell(t, [e.score, e.costs[0]])
                if e.feasible:
                    best = max(best, e.score)
            result.history.append(float(best))
            if log is not None and (generation % 10 == 9 or generation == generations - 1):
                log(f"{label}generation {generation + 1:3d}/{generations}: best predicted {best:.4f}, "
                    f"{len(result.evaluated)} distinct archs scored")
    result.trials = generations * population
    result.seconds = time.perf_counter() - start
    return result


def pareto_front(points: Sequence[tuple[float, float, object]]) -> list[tuple[float, float, object]]:
    """The non-dominated (cost, score, payload) points (lower cost, higher score), by ascending cost."""
    front: list[tuple[float, float, object]] = []
    for c, s, p in sorted(points, key=lambda x: (x[0], -x[1])):
        if not front or s > front[-1][1]:
            front.append((c, s, p))
    return front
