"""What benchmarks/search_vs_ofa.py searches: the landscapes (a seeded stand-in predictor, or the MLP predictor
``ofa search`` fits on a run's measured table) and the counters of MACs and predictor calls both methods pay for.

Imported by search_vs_ofa.py after the ``search`` package (this folder's search.py would shadow it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ofa import Arch, SearchSpace
from search.genes import GeneSpace

TARGET_R = 0.7  # correlation of the score with log(MACs) over random archs
# score = CENTER + SPREAD * (a standardised mix). Random archs sit within about +-2 of CENTER, but a search
# finds archs about 7 standard deviations up (the MLP term adds up over ~40 genes), so a small SPREAD keeps what
# the searches find (and the smallest arch) within a plausible 70-82 top-1.
CENTER, SPREAD = 74.5, 1.0


class Macs:
    """MACs of an arch, cached by ``arch.key()``. One fresh instance per search run, so that each run pays for
    its own cost-model calls (``net.costs`` keeps its own cache across runs, hence ``net.plan.costs``)."""

    def __init__(self, net) -> None:
        self.plan = net.plan
        self.cache: dict[str, int] = {}
        self.misses = 0

    def __call__(self, arch: Arch) -> int:
        key = arch.key()
        value = self.cache.get(key)
        if value is None:
            value = self.cache[key] = int(self.plan.costs(arch)[0])
            self.misses += 1
        return value


class Landscape:
    """The stand-in predictor: ``CENTER + SPREAD * (r * capacity + sqrt(1 - r^2) * mlp)``, where capacity is
    standardised log(MACs) and mlp is a seeded random MLP's output with its linear dependence on log(MACs)
    removed and standardised (both over random archs), so that the score's correlation with log(MACs) is r."""

    def __init__(self, net, space: SearchSpace, seed: int = 0, r: float = TARGET_R, hidden: int = 64,
                 calibration: int = 2000) -> None:
        self.genes = GeneSpace(space)
        self.r = r
        rng = np.random.default_rng(seed)
        active = len(self.genes.encode([space.largest()])[0].nonzero()[0])  # ones per row, at most
        self.w1 = rng.standard_normal((self.genes.width, hidden)) / math.sqrt(active)
        self.b1 = rng.standard_normal(hidden) * 0.5
        self.w2 = rng.standard_normal(hidden) / math.sqrt(hidden)
        archs = sample_archs(space, calibration, seed)
        macs = Macs(net)
        log_macs = np.log([macs(a) for a in archs])
        mlp = self._mlp(archs)
        self.c_mean, self.c_std = float(log_macs.mean()), float(log_macs.std())
        self.slope, self.intercept = (float(v) for v in np.polyfit(log_macs, mlp, 1))
        self.m_std = float((mlp - self.slope * log_macs - self.intercept).std())

    def _mlp(self, archs: Sequence[Arch]) -> np.ndarray:
        x = self.genes.encode(archs).astype(np.float64)
        return np.tanh(x @ self.w1 + self.b1) @ self.w2

    def score(self, archs: Sequence[Arch], macs: Sequence[float]) -> np.ndarray:
        log_macs = np.log(np.asarray(macs, dtype=np.float64))
        capacity = (log_macs - self.c_mean) / self.c_std
        rest = (self._mlp(archs) - self.slope * log_macs - self.intercept) / self.m_std
        return CENTER + SPREAD * (self.r * capacity + math.sqrt(1.0 - self.r**2) * rest)

    def describe(self, net, space: SearchSpace, n: int = 2000, seed: int = 12345) -> dict:
        """The landscape over fresh random archs (not those it was calibrated on)."""
        archs = sample_archs(space, n, seed)
        macs = Macs(net)
        m = np.array([macs(a) for a in archs], dtype=np.float64)
        s = self.score(archs, m)
        q = np.percentile(s, [0, 5, 50, 95, 100])
        return {"archs": n, "r_score_log_macs": float(np.corrcoef(s, np.log(m))[0, 1]),
                "r_score_macs": float(np.corrcoef(s, m)[0, 1]),
                "score_min_p5_median_p95_max": [float(v) for v in q],
                "macs_min_median_max": [float(m.min()), float(np.median(m)), float(m.max())]}


def sample_archs(space: SearchSpace, n: int, seed: int) -> list[Arch]:
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


class Predictor:
    """The landscape behind a counter: how many archs a search asked to score, and in how many batches."""

    def __init__(self, landscape: Landscape, macs: Macs) -> None:
        self.landscape, self.macs = landscape, macs
        self.calls = self.batches = 0

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        self.calls += len(archs)
        self.batches += 1
        return self.landscape.score(archs, [self.macs(a) for a in archs])


class FittedLandscape:
    """Landscape (b): the MLP accuracy predictor ``ofa search`` fits, on a real measured accuracy table
    (RUN/search/accuracy_table.csv of a trained run), over that run's space (every resolution)."""

    def __init__(self, run: Path, net) -> None:
        from search.predictor import fit_predictor
        from search.table import load_table_csv

        self.genes = GeneSpace(net.space)
        rows = load_table_csv(run / "search" / "accuracy_table.csv", net.space)
        self.predictor = fit_predictor(self.genes, [r["arch"] for r in rows], [r["top1"] for r in rows],
                                       family="mlp", metric="top1", seed=0)
        self.rows = len(rows)

    def score(self, archs: Sequence[Arch], macs: Sequence[float]) -> np.ndarray:
        return np.asarray(self.predictor.predict(list(archs)), dtype=np.float64)

    def describe(self, net, space: SearchSpace) -> dict:
        return {"table_rows": self.rows, "held_out": {k: v for k, v in self.predictor.held_out.items()
                                                      if isinstance(v, (int, float))}}
