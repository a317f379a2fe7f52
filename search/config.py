"""``SearchConfig``: everything one ``ofa search`` run needs; its values are checked when it is made."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ofa import OFAError

from .budgets import Budget
from .effort import EFFORTS, Effort
from .modes import SEARCH_MODES
from .predictor import METRICS, PREDICTORS
from .verify import Timer

# Named as the command line spells them: a config made in Python fails with the same message as ``ofa search``.
POSITIVE = ("table_size", "generations", "population", "calib_batches", "batch_size", "rerank", "workers",
            "grace_period", "heartbeat_interval")


@dataclass
class SearchConfig:
    run_dir: str | Path
    budgets: list[Budget] = field(default_factory=list)
    storage: str | None = None  # default: sqlite:///RUN/search/study.db
    table_size: int = 200
    seed: int = 0
    predictor: str = "mlp"  # a key of search.predictor.PREDICTORS
    metric: str = "top1"  # predictor target: validation top1 or loss
    compare_predictors: bool = False  # also fit the other families and record their held-out scores
    mode: str = "constrained"  # a key of search.modes.SEARCH_MODES
    effort: str = "default"  # a key of search.effort.EFFORTS: population x generations per budget
    generations: int | None = None  # overrides the effort's
    population: int | None = None  # overrides the effort's
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    nested: bool = False
    rerank: int = 5  # measure the top-k predicted archs of each budget on validation and keep the best measured
    luts: dict[str, str] = field(default_factory=dict)
    calib_batches: int = 4
    batch_size: int = 128
    val_limit: int | None = None
    test_limit: int | None = None
    measure_only: bool = False
    replace: bool = False  # write selected.json anew instead of keeping an earlier search's other devices
    force: bool = False  # write subnets measured at chance level on test (refused by default)
    measure_test: bool = True
    workers: int = 1  # > 1: that many measurement processes (search.workers), one per GPU or CPU threads split
    measure_device: str = "auto"  # where the table is measured: auto (cuda when a GPU is visible), cpu, cuda
    heartbeat_interval: int = 10
    grace_period: int = 60
    stale_after: float = 1800.0
    progress: bool = True
    predictor_epochs: int = 300
    verify_latency: bool = True  # time latency-budgeted choices in deployed form (on the table's host)
    strict_latency: bool = True  # no candidate within a latency budget: an error (False: a warning)
    latency_timer: Timer | None = None  # (model, input) -> times in ms; default: 5 warm-up, 40 timed runs

    def __post_init__(self) -> None:
        if self.predictor not in PREDICTORS:
            raise OFAError(f"unknown predictor {self.predictor!r}; allowed: {list(PREDICTORS)}")
        for name in POSITIVE:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise OFAError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        if self.metric not in METRICS:
            raise OFAError(f"unknown predictor target {self.metric!r}; allowed: {list(METRICS)}")
        if self.mode not in SEARCH_MODES:
            raise OFAError(f"unknown search mode {self.mode!r}; allowed: {list(SEARCH_MODES)}")
        if self.effort not in EFFORTS:
            raise OFAError(f"unknown search effort {self.effort!r}; allowed: {list(EFFORTS)}")

    def search_size(self) -> Effort:
        """The effort's population and generations, with explicit ``population``/``generations`` on top."""
        base = EFFORTS[self.effort]
        return replace(base, population=self.population or base.population,
                       generations=self.generations or base.generations)
