"""What the evolutionary search optimises: one class per mode (``OBJECTIVES``).

``constrained`` maximises the predicted score under one device's limits (constrained domination: the best feasible
trial is never over budget); ``pareto`` maximises the score while minimising one cost, giving the front for all
budgets of that cost in one run. The loop in :mod:`search.evolution` asks its objective how to judge an arch, what
NSGA-II minimises, and what to tell an Optuna study.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ofa import Arch

if TYPE_CHECKING:
    import optuna

    from .evolution import Evaluated


class Objective(ABC):
    name: ClassVar[str]
    directions: ClassVar[tuple[str, ...]]  # of the Optuna study: the score first

    @classmethod
    @abstractmethod
    def of(cls, violations: Callable[[Arch], Sequence[float]] | None,
           cost: Callable[[Arch], float] | None) -> Objective:
        """The objective from :func:`search.evolution.evolve`'s keyword arguments (each mode takes its own)."""

    @abstractmethod
    def judge(self, arch: Arch) -> tuple[tuple[float, ...], bool]:
        """(costs, feasible) of ``arch``: what :class:`search.evolution.Evaluated` records beside its score."""

    @abstractmethod
    def minimised(self, records: Sequence[Evaluated]) -> tuple[np.ndarray, np.ndarray]:
        """Objectives to minimise (one row per record) and total constraint violation (0 when feasible)."""

    @abstractmethod
    def tell(self, study: optuna.Study, trial: optuna.Trial, record: Evaluated) -> None:
        """Report a scored trial to an Optuna study of ``directions``."""


class ConstrainedObjective(Objective):
    """Maximise the score; ``violations(arch)`` gives constraint values, <= 0 where feasible (none: all are)."""

    name = "constrained"
    directions = ("maximize",)

    def __init__(self, violations: Callable[[Arch], Sequence[float]] | None = None) -> None:
        self.violations = violations

    @classmethod
    def of(cls, violations, cost) -> ConstrainedObjective:
        return cls(violations)

    def judge(self, arch: Arch) -> tuple[tuple[float, ...], bool]:
        if self.violations is None:
            return (), True
        costs = tuple(float(c) for c in self.violations(arch))
        return costs, all(c <= 0 for c in costs)

    def minimised(self, records: Sequence[Evaluated]) -> tuple[np.ndarray, np.ndarray]:
        objectives = np.array([[-e.score] for e in records])
        violation = np.array([0.0 if e.feasible else sum(max(0.0, c) for c in e.costs) for e in records])
        return objectives, violation

    def tell(self, study: optuna.Study, trial: optuna.Trial, record: Evaluated) -> None:
        for i, c in enumerate(record.costs):
            trial.set_constraint(f"limit{i}", c)
        study.tell(trial, record.score)


class ParetoObjective(Objective):
    """Maximise the score and minimise ``cost(arch)``; every arch is feasible."""

    name = "pareto"
    directions = ("maximize", "minimize")

    def __init__(self, cost: Callable[[Arch], float] | None) -> None:
        if cost is None:
            raise ValueError("pareto mode needs a cost function")
        self.cost = cost

    @classmethod
    def of(cls, violations, cost) -> ParetoObjective:
        return cls(cost)

    def judge(self, arch: Arch) -> tuple[tuple[float, ...], bool]:
        return (float(self.cost(arch)),), True

    def minimised(self, records: Sequence[Evaluated]) -> tuple[np.ndarray, np.ndarray]:
        return np.array([[-e.score, e.costs[0]] for e in records]), np.zeros(len(records))

    def tell(self, study: optuna.Study, trial: optuna.Trial, record: Evaluated) -> None:
        study.tell(trial, [record.score, record.costs[0]])


OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (ConstrainedObjective, ParetoObjective)}
MODES = tuple(OBJECTIVES)


def make_objective(mode: str, violations: Callable[[Arch], Sequence[float]] | None = None,
                   cost: Callable[[Arch], float] | None = None) -> Objective:
    """The objective of ``mode``, from the functions it needs (``violations`` or ``cost``; the other is unused)."""
    if mode not in OBJECTIVES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return OBJECTIVES[mode].of(violations, cost)
