"""Evolutionary search (NSGA-II) over the genes of a search space, scored by a predictor.

Every candidate carries every gene, also the genes of blocks beyond their stage's depth; the arch is then
canonicalised, and archs that differ only in inactive genes share one cached score. A generation is bred as one
integer array (:mod:`search.nsga`) and scored in one batch. Passing an Optuna sampler instead runs every
candidate as a trial of an in-memory study (ask a whole population, score the new archs in one batch, tell):
any Optuna sampler works there, at about 3 ms of bookkeeping per trial.

Two modes (:mod:`search.objectives`): ``constrained`` maximises the predicted score under one device's limits
(``Trial.set_constraint``: constrained domination, so the best feasible trial is never over budget) and ``pareto``
maximises the score while minimising one cost, giving the front for all budgets in one run.
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
from .nsga import NSGA2
from .objectives import Objective, make_objective


@dataclass
class Evaluated:
    arch: Arch
    score: float  # higher is better
    costs: tuple[float, ...] = ()  # the constrained costs' relative excess (constrained) or the cost (pareto)
    feasible: bool = True


@dataclass
class EvolutionResult:
    evaluated: dict[Arch, Evaluated]  # every distinct arch the search scored, in the order first scored
    history: list[float] = field(default_factory=list)  # best feasible score after each generation
    trials: int = 0
    seconds: float = 0.0

    def best(self, accept: Callable[[Arch], bool] | None = None) -> Evaluated | None:
        top = self.top(1, accept)
        return top[0] if top else None

    def top(self, k: int, accept: Callable[[Arch], bool] | None = None) -> list[Evaluated]:
        """The ``k`` best-scored feasible distinct archs (``accept`` filters further), best first."""
        pool = [e for e in self.evaluated.values() if e.feasible and (accept is None or accept(e.arch))]
        return sorted(pool, key=lambda e: -e.score)[:k]  # stable: ties stay in the order they were found


def evolve(genes: GeneSpace, score: Callable[[list[Arch]], np.ndarray], *, generations: int = 40,
           population: int = 50, objective: Objective | None = None, mode: str = "constrained",
           violations: Callable[[Arch], Sequence[float]] | None = None,
           cost: Callable[[Arch], float] | None = None, seeds: Sequence[Arch] = (), seed: int = 0,
           mutation_prob: float | None = None, crossover_prob: float = 0.9, swapping_prob: float = 0.5,
           sampler: optuna.samplers.BaseSampler | None = None, stage_crossover: float = 0.0,
           log: Callable[[str], None] | None = None, label: str = "") -> EvolutionResult:
    """Run NSGA-II for ``generations`` x ``population`` trials.

    ``score(archs)`` returns one value per arch (higher is better) and is called once per generation on the
    archs not seen before. ``objective`` says what is optimised (:mod:`search.objectives`); without it, ``mode``
    names one: ``violations(arch)`` gives constraint values (<= 0 is feasible) in constrained mode; ``cost(arch)``
    is the second objective in pareto mode. By default a generation is bred as one array
    (:mod:`search.nsga`); with an Optuna ``sampler`` every candidate is an Optuna trial instead (any sampler,
    about 3 ms of bookkeeping per trial). ``stage_crossover`` is the share of crossovers that swap whole stages
    (a stage's depth, width and block genes together) rather than single genes.
    """
    objective = objective or make_objective(mode, violations, cost)
    result = EvolutionResult(evaluated={})
    start = time.perf_counter()

    def evaluate(archs: list[Arch]) -> list[Evaluated]:
        """Score the archs not seen before in one batch; every arch's record, in order."""
        new = list(dict.fromkeys(a for a in archs if a not in result.evaluated))
        if new:
            for a, v in zip(new, np.asarray(score(new), dtype=np.float64)):
                costs, feasible = objective.judge(a)
                result.evaluated[a] = Evaluated(a, float(v), costs, feasible)
        return [result.evaluated[a] for a in archs]

    def report(generation: int, best: float) -> None:
        result.history.append(float(best))
        if log is not None and (generation % 10 == 9 or generation == generations - 1):
            log(f"{label}generation {generation + 1:3d}/{generations}: best predicted {best:.4f}, "
                f"{len(result.evaluated)} distinct archs scored")

    if sampler is None:
        groups = [0 if g.stage is None else g.stage + 1 for g in genes.genes] if stage_crossover > 0 else None
        engine = NSGA2([len(g.choices) for g in genes.genes], population, seed, mutation_prob, crossover_prob,
                       swapping_prob, groups, float(stage_crossover))
        _evolve_arrays(genes, engine, evaluate, report, generations, objective, seeds)
    else:
        _evolve_optuna(genes, sampler, evaluate, report, generations, population, objective, seeds)
    result.trials = generations * population
    result.seconds = time.perf_counter() - start
    return result


def _evolve_arrays(genes: GeneSpace, engine: NSGA2, evaluate, report, generations: int, objective: Objective,
                   seeds: Sequence[Arch]) -> None:
    """NSGA-II on index matrices: one array operation per step of a generation, one score call per generation."""
    population = engine.population
    rows = []
    for a in seeds:  # known-good starting points; those outside a narrowed gene space are skipped
        try:
            values = genes.genes_from_arch(a)
        except ArchError:
            continue
        rows.append([g.choices.index(values[g.name]) for g in genes.genes])
    rows = rows[:population]
    # Inactive genes (blocks beyond a stage's depth) stay in the population: material a later, deeper child uses.
    # Archs are keyed by the canonical row (inactive genes at index 0), so repeats are found and archs decoded
    # once per distinct arch, by row bytes.
    pop = np.concatenate([np.asarray(rows, dtype=np.int64).reshape(-1, len(genes.genes)),
                          engine.random(population - len(rows))])
    decoded: dict[bytes, Arch] = {}

    def archs_of(matrix: np.ndarray) -> list[Arch]:
        return _decode(genes, genes.canonical(matrix), decoded)

    records = evaluate(archs_of(pop))
    best = -np.inf
    for generation in range(generations):
        if generation > 0:
            ranks, crowd = engine.rank(*objective.minimised(records))
            children = engine.offspring(pop, ranks, crowd)
            for _ in range(5):  # a child that repeats a scored arch (or a sibling) learns nothing: move it
                repeats, siblings = [], set()
                for i, row in enumerate(genes.canonical(children)):
                    key = row.tobytes()
                    if key in decoded or key in siblings:
                        repeats.append(i)
                    siblings.add(key)
                if not repeats:
                    break
                children[repeats] = engine.perturb(children[repeats])
            child_records = evaluate(archs_of(children))
            merged = np.concatenate([pop, children])
            merged_records = records + child_records
            keep = engine.survivors(*objective.minimised(merged_records),
                                    [row.tobytes() for row in genes.canonical(merged)])
            pop, records = merged[keep], [merged_records[i] for i in keep]
            new_records = child_records
        else:
            new_records = records
        best = max([best] + [e.score for e in new_records if e.feasible])
        report(generation, best)


def _decode(genes: GeneSpace, matrix: np.ndarray, decoded: dict[bytes, Arch]) -> list[Arch]:
    """The arch of every row of choice indices (``decoded`` caches them by row)."""
    out = []
    for row in matrix:
        key = row.tobytes()
        if key not in decoded:
            decoded[key] = genes.arch_from_indices(row.tolist())
        out.append(decoded[key])
    return out


def _evolve_optuna(genes: GeneSpace, sampler: optuna.samplers.BaseSampler, evaluate, report, generations: int,
                   population: int, objective: Objective, seeds: Sequence[Arch]) -> None:
    """Every candidate an Optuna trial of ``sampler`` (ask a generation, score it in one batch, tell)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=list(objective.directions), sampler=sampler)
    for a in seeds:
        try:
            study.enqueue_trial(genes.genes_from_arch(a))
        except ArchError:
            pass
    distributions = [(g.name, g.choices) for g in genes.genes]
    best = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for generation in range(generations):
            trials = [study.ask() for _ in range(population)]
            archs = [genes.arch_from_genes({name: t.suggest_categorical(name, choices)
                                            for name, choices in distributions}) for t in trials]
            for t, e in zip(trials, evaluate(archs)):
                objective.tell(study, t, e)
                if e.feasible:
                    best = max(best, e.score)
            report(generation, best)


class SharedScores:
    """A deterministic predictor behind a cache shared by every budget of one search: a sweep over many budgets
    scores each distinct arch once (``calls`` counts the archs actually sent to the predictor)."""

    def __init__(self, score: Callable[[list[Arch]], np.ndarray]) -> None:
        self.score = score
        self.cache: dict[Arch, float] = {}
        self.calls = 0

    def __call__(self, archs: list[Arch]) -> np.ndarray:
        new = list(dict.fromkeys(a for a in archs if a not in self.cache))
        if new:
            self.calls += len(new)
            for a, v in zip(new, np.asarray(self.score(new), dtype=np.float64)):
                self.cache[a] = float(v)
        return np.array([self.cache[a] for a in archs])


def warm_seeds(scored: Sequence[Evaluated], fits: Callable[[Arch], bool], k: int) -> list[Arch]:
    """The ``k`` best-scored archs that earlier budgets' searches found and that fit this budget: a sweep over
    nested budgets starts each search where the neighbouring budgets' searches ended."""
    best = sorted(scored, key=lambda e: -e.score)
    return [e.arch for e in best if fits(e.arch)][:k]


def pareto_front(points: Sequence[tuple[float, float, object]]) -> list[tuple[float, float, object]]:
    """The non-dominated (cost, score, payload) points (lower cost, higher score), by ascending cost."""
    front: list[tuple[float, float, object]] = []
    for c, s, p in sorted(points, key=lambda x: (x[0], -x[1])):
        if not front or s > front[-1][1]:
            front.append((c, s, p))
    return front
