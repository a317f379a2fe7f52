"""How ``ofa search`` searches each budget: one class per ``--mode`` (``SEARCH_MODES``).

``constrained``: one NSGA-II run per budget under its limits (:class:`search.objectives.ConstrainedObjective`),
started from the best archs that earlier budgets' searches found that fit it; a cost that at least
``SWEEP_MIN_BUDGETS`` budgets bound is first searched as one Pareto front (a sweep), and each of those budgets then
gets a shorter run. ``pareto``: one multi-objective run per cost (:class:`search.objectives.ParetoObjective`),
whose front serves every budget on that cost.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ofa import Arch

from .budgets import Budget, CostModel
from .effort import SWEEP_MIN_BUDGETS, Effort
from .evolution import Evaluated, EvolutionResult, warm_seeds
from .objectives import ConstrainedObjective, ParetoObjective

if TYPE_CHECKING:
    from .config import SearchConfig

# evolve(label, seeds, objective, size, history=...) -> the evolution's result; ``history``: log its best score
# per generation to search_log.csv (a front's best says nothing about a budget: never logged)
Evolve = Callable[..., EvolutionResult]


def cost_key(b: Budget) -> tuple[str, str | None]:
    """What a budget's primary limit bounds: ("macs", None), ("params", None) or ("latency_ms", TABLE), TABLE being
    DEVICE or DEVICE.int8 (``Budget.latency_key``)."""
    kind = b.primary()
    return kind, b.latency_key if kind == "latency_ms" else None


class SearchMode(ABC):
    """Searches the budgets of one ``ofa search`` in turn; keeps what one budget's search leaves for the next."""

    name: ClassVar[str]

    def __init__(self, cfg: SearchConfig, costs: CostModel, evolve: Evolve, log_rows: list[dict]) -> None:
        self.cfg, self.costs, self.evolve, self.log_rows = cfg, costs, evolve, log_rows
        self.fronts: dict[tuple[str, str | None], EvolutionResult] = {}  # one Pareto run per cost, when run

    @abstractmethod
    def candidates(self, b: Budget, seeds: list[Arch]) -> tuple[EvolutionResult, list[Evaluated]]:
        """The evolution that searched budget ``b`` (started from ``seeds``) and its best ``cfg.rerank``
        candidates within ``b``, best predicted first."""

    def front(self, key: tuple[str, str | None], label: str, size: Effort, seeds: list[Arch]) -> EvolutionResult:
        """The Pareto run over the cost ``key`` (run once, by the first budget on that cost)."""
        if key not in self.fronts:
            kind, device = key
            self.fronts[key] = self.evolve(f"{label}-{kind}", seeds,
                                           ParetoObjective(lambda a: self.costs.cost(a, kind, device)), size,
                                           history=False)
        return self.fronts[key]


class ConstrainedMode(SearchMode):
    name = "constrained"

    def __init__(self, cfg: SearchConfig, costs: CostModel, evolve: Evolve, log_rows: list[dict]) -> None:
        super().__init__(cfg, costs, evolve, log_rows)
        keys = [cost_key(b) for b in cfg.budgets]
        self.sweeps = {k for k in keys if keys.count(k) >= SWEEP_MIN_BUDGETS}  # costs searched as a sweep
        self.found: list[Evaluated] = []  # each budget's best candidates: where the next budget's search starts

    def candidates(self, b: Budget, seeds: list[Arch]) -> tuple[EvolutionResult, list[Evaluated]]:
        key, size = cost_key(b), self.cfg.search_size()
        if key in self.sweeps:
            front_size, size = size.sweep()
            if key not in self.fronts:
                front = self.front(key, "sweep", front_size, seeds)
                self.found = front.top(len(front.evaluated)) + self.found  # by score: the budgets start here
        seeds = seeds + warm_seeds(self.found, lambda a: self.costs.fits(a, b), size.population // 4)
        res = self.evolve(b.name, seeds, ConstrainedObjective(lambda a: self.costs.violations(a, b)), size,
                           history=True)
        self.found += res.top(size.population // 4)
        return res, res.top(self.cfg.rerank)


class ParetoMode(SearchMode):
    name = "pareto"

    def candidates(self, b: Budget, seeds: list[Arch]) -> tuple[EvolutionResult, list[Evaluated]]:
        res = self.front(cost_key(b), "pareto", self.cfg.search_size(), seeds)
        self._log_best_per_generation(res, b)
        return res, res.top(self.cfg.rerank, lambda a: self.costs.fits(a, b))

    def _log_best_per_generation(self, res: EvolutionResult, b: Budget) -> None:
        """The front's study has no per-device best; replay the scored archs by generation order instead."""
        best, per_gen, n = -np.inf, [], len(res.history)
        items = list(res.evaluated.values())  # insertion order = the generation that first scored each arch
        chunk = max(1, len(items) // max(1, n))
        for g in range(n):
            for e in items[g * chunk:(g + 1) * chunk]:
                if self.costs.fits(e.arch, b):
                    best = max(best, e.score)
            per_gen.append(best)
        self.log_rows += [{"search": f"pareto:{b.name}", "generation": g + 1, "trials": None, "best_predicted": v}
                          for g, v in enumerate(per_gen)]


SEARCH_MODES: dict[str, type[SearchMode]] = {cls.name: cls for cls in (ConstrainedMode, ParetoMode)}
