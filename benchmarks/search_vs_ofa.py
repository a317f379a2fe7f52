"""Search benchmark: the original once-for-all (OFA) evolution finder versus this project's search.

Both search the same stand-in accuracy predictor under the same MACs budgets, with the same MACs function:

* the OFA finder, re-implemented here from its published description: population 100, 500 generations, the top
  25% kept as parents, 50 children by mutation (each gene resampled with probability 0.1) and 25 by uniform
  crossover, every arch drawn again until it fits the budget (rejection sampling);
* ours: ``search.evolution.evolve`` (Optuna NSGA-II) in constrained mode, called as ``ofa search`` calls it
  (the ``SearchConfig`` defaults for generations, population, mutation and crossover; seeds = the largest and
  the smallest arch; the constraint is the relative excess ``macs / limit - 1``).

The predictor is a stand-in (no trained supernet is needed): a capacity term linear in log(MACs) plus a fixed,
seeded random 2-layer MLP over the one-hot arch encoding (``GeneSpace.encode``), mixed so that the score
correlates with log(MACs) at r = 0.7 over random archs, and scaled so that what the searches find looks like a
top-1 of 70-82. It is deterministic and vectorised, so what is timed is the search machinery; the predictor
calls are counted so that the cost of a real (slower) predictor can be added on top.

Spaces: ``ofa_mbv3`` and ``ofa_resnet50``, both at resolution 224 only, three MACs budgets each. Every (seed,
budget) runs both methods back to back, the order alternating with the seed's parity; one thread. Reported per
space and budget: the median best predicted score and median seconds of each method, the predictor and
cost-model calls, and the goal: ours' best >= OFA's and ours' time <= 1/4 of OFA's.

    python benchmarks/search_vs_ofa.py                      # 5 seeds, both spaces, 3 budgets each
    python benchmarks/search_vs_ofa.py --quick              # smoke run: 2 seeds, ofa_mbv3, 50 OFA generations
    python benchmarks/search_vs_ofa.py --spaces ofa_resnet50 --seeds 3
    python benchmarks/search_vs_ofa.py --long               # also ours with 50,000 trials (attainable best)

Writes benchmarks/results/search_vs_ofa.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# one thread for every library, before numpy and torch start their pools
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# Run as `python benchmarks/search_vs_ofa.py`, this file's folder comes first on sys.path and its search.py would
# shadow the `search` package: drop that folder before importing it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402

import ofa  # noqa: E402
from ofa import Arch, SearchSpace  # noqa: E402
from search.evolution import evolve  # noqa: E402
from search.genes import GeneSpace  # noqa: E402
from search.run import SearchConfig  # noqa: E402

RESOLUTION = 224
SPACES = ("ofa_mbv3", "ofa_resnet50")
# ofa_mbv3 at 224 spans about 121M-566M MACs: the usual mobile budgets. ofa_resnet50 gets fractions of its range.
FIXED_BUDGETS = {"ofa_mbv3": (300e6, 400e6, 500e6)}
RANGE_FRACTIONS = (0.3, 0.5, 0.7)
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


# -- the OFA finder ------------------------------------------------------------------------------------------
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


# -- ours ----------------------------------------------------------------------------------------------------
def our_search(genes: GeneSpace, predictor: Predictor, macs: Macs, limit: float, *, seed: int,
               generations: int, population: int) -> dict:
    """``evolve`` as ``ofa search`` runs it for one MACs budget (no accuracy table here, so no measured seeds)."""
    cfg = SearchConfig(run_dir=".")
    space = genes.space
    start = time.perf_counter()
    res = evolve(genes, predictor, generations=generations, population=population, mode="constrained",
                 violations=lambda a: [macs(a) / limit - 1.0], seeds=[space.largest(), space.smallest()],
                 seed=seed, mutation_prob=cfg.mutation_prob, crossover_prob=cfg.crossover_prob)
    seconds = time.perf_counter() - start
    best = res.best()
    return {"best": best.score, "best_macs": macs(best.arch), "seconds": seconds,
            "predictor_calls": predictor.calls, "predictor_batches": predictor.batches, "trials": res.trials,
            "macs_calls": macs.misses, "history": res.history}  # best feasible score per generation


def best_at(history: list[tuple[int, float]], calls: int) -> float:
    """The best score a run had reached once it had made ``calls`` predictor calls (its first point >= calls)."""
    for c, v in history:
        if c >= calls:
            return v
    return history[-1][1]


# -- the benchmark -------------------------------------------------------------------------------------------
def budgets_for(name: str, net, space: SearchSpace) -> list[float]:
    if name in FIXED_BUDGETS:
        return list(FIXED_BUDGETS[name])
    low, high = net.costs(space.smallest())[0], net.costs(space.largest())[0]
    return [round((low + f * (high - low)) / 1e7) * 1e7 for f in RANGE_FRACTIONS]  # to 10M MACs


def run_pair(method: str, net, landscape: Landscape, limit: float, seed: int, args) -> dict:
    macs = Macs(net)
    predictor = Predictor(landscape, macs)
    if method == "ofa":
        return ofa_finder(landscape.genes, predictor, macs, limit, seed=seed, generations=args.ofa_generations)
    if method == "ours":
        return our_search(landscape.genes, predictor, macs, limit, seed=seed, generations=args.generations,
                          population=args.population)
    return our_search(landscape.genes, predictor, macs, limit, seed=seed, generations=args.long_generations,
                      population=args.long_population)


def summarise(runs: list[dict], space: str, limit: float, methods: list[str]) -> dict:
    out: dict = {"space": space, "budget_macs": limit}
    for m in methods:
        rs = [r for r in runs if r["space"] == space and r["budget_macs"] == limit and r["method"] == m]
        out[m] = {k: statistics.median(r[k] for r in rs) for k in ("best", "seconds", "predictor_calls",
                                                                   "macs_calls", "best_macs")}
        out[m]["runs"] = len(rs)
    ofa_runs = [r for r in runs if r["space"] == space and r["budget_macs"] == limit and r["method"] == "ofa"]
    ours_runs = {r["seed"]: r for r in runs
                 if r["space"] == space and r["budget_macs"] == limit and r["method"] == "ours"}
    pairs = [(o, ours_runs[o["seed"]]) for o in ofa_runs]
    out["ofa"]["best_at_ours_calls"] = statistics.median(best_at(o["history"], u["predictor_calls"])
                                                         for o, u in pairs)
    out["ours_ge_ofa_seeds"] = sum(u["best"] >= o["best"] - 1e-9 for o, u in pairs)
    out["time_ratio"] = out["ours"]["seconds"] / out["ofa"]["seconds"]
    out["goal_best"] = out["ours"]["best"] >= out["ofa"]["best"] - 1e-9
    out["goal_time"] = out["time_ratio"] <= 0.25
    return out


def main() -> None:
    cfg = SearchConfig(run_dir=".")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spaces", default=",".join(SPACES), help=f"comma-separated, from {','.join(SPACES)}")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--ofa-generations", type=int, default=500)
    p.add_argument("--generations", type=int, default=cfg.generations, help="ours (the `ofa search` default)")
    p.add_argument("--population", type=int, default=cfg.population, help="ours (the `ofa search` default)")
    p.add_argument("--long", action="store_true", help="also ours with 50,000 trials (an attainable best)")
    p.add_argument("--long-generations", type=int, default=500)
    p.add_argument("--long-population", type=int, default=100)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, ofa_mbv3 only, 50 OFA generations")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "search_vs_ofa.json"))
    args = p.parse_args()
    if args.quick:
        args.seeds, args.spaces, args.ofa_generations = 2, "ofa_mbv3", 50
    torch.set_num_threads(1)
    methods = ["ofa", "ours"] + (["ours_long"] if args.long else [])

    landscapes, runs, summary = {}, [], []
    for name in args.spaces.split(","):
        if name not in SPACES:
            raise SystemExit(f"unknown space {name!r}; allowed: {', '.join(SPACES)}")
        net = ofa.create_supernet(name)
        space = net.space.restrict(resolutions=[RESOLUTION])
        landscape = Landscape(net, space)
        budgets = budgets_for(name, net, space)
        landscapes[name] = {"resolution": RESOLUTION, "budgets_macs": budgets, "genes": len(landscape.genes.genes),
                            "smallest_macs": net.costs(space.smallest())[0],
                            "largest_macs": net.costs(space.largest())[0], **landscape.describe(net, space)}
        d = landscapes[name]
        print(f"{name} @{RESOLUTION}: {d['genes']} genes, MACs {d['smallest_macs'] / 1e6:.0f}M-"
              f"{d['largest_macs'] / 1e6:.0f}M; score vs log(MACs) r = {d['r_score_log_macs']:.3f}, vs MACs "
              f"r = {d['r_score_macs']:.3f}; score p5-p95 {d['score_min_p5_median_p95_max'][1]:.2f}-"
              f"{d['score_min_p5_median_p95_max'][3]:.2f}", flush=True)
        for seed in range(args.seeds):
            for limit in budgets:
                # alternate which method goes first, so neither always runs on the warmer machine
                order = methods if seed % 2 == 0 else methods[::-1]
                for method in order:
                    r = run_pair(method, net, landscape, limit, seed, args)
                    runs.append({"space": name, "budget_macs": limit, "seed": seed, "method": method, **r})
                    print(f"  seed {seed} {limit / 1e6:5.0f}M {method:9s} best {r['best']:.3f} "
                          f"({r['best_macs'] / 1e6:.0f}M MACs) {r['seconds']:6.1f}s "
                          f"{r['predictor_calls']} predictor calls", flush=True)
        summary += [summarise(runs, name, limit, methods) for limit in budgets]

    result = {"host": platform.node(), "python": platform.python_version(), "threads": torch.get_num_threads(),
              "note": "CPU timings on a shared machine; stand-in predictor, see the module docstring",
              "settings": {"seeds": args.seeds, "ofa": {"population": 100, "generations": args.ofa_generations,
                                                         "parent_ratio": 0.25, "mutation_ratio": 0.5,
                                                         "mutate_prob": 0.1},
                           "ours": {"generations": args.generations, "population": args.population,
                                    "mutation_prob": cfg.mutation_prob, "crossover_prob": cfg.crossover_prob},
                           "ours_long": ({"generations": args.long_generations,
                                          "population": args.long_population} if args.long else None)},
              "target_r": TARGET_R, "landscapes": landscapes, "summary": summary,
              "runs": [{k: v for k, v in r.items() if k != "history"} | {"history_every_10": r["history"][::10]}
                       for r in runs]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print_table(summary, methods, args.seeds)
    print(f"\nwrote {out}")


def print_table(summary: list[dict], methods: list[str], seeds: int) -> None:
    print(f"\nmedians over {seeds} seeds (best = predicted score of the best arch within the budget)")
    head = f"{'space':<13}{'budget':>7}"
    for m in methods:
        head += f"{m + ' best':>15}{m + ' s':>11}{m + ' calls':>14}"
    head += f"{'OFA@ours calls':>16}{'ours>=OFA':>11}{'time ratio':>12}"
    print(head)
    for s in summary:
        line = f"{s['space']:<13}{s['budget_macs'] / 1e6:6.0f}M"
        for m in methods:
            line += f"{s[m]['best']:15.3f}{s[m]['seconds']:11.2f}{s[m]['predictor_calls']:14.0f}"
        line += (f"{s['ofa']['best_at_ours_calls']:16.3f}{'yes' if s['goal_best'] else 'no':>7} "
                 f"({s['ours_ge_ofa_seeds']}/{s['ofa']['runs']})"
                 f"{s['time_ratio']:8.3f} {'ok' if s['goal_time'] else 'no'}")
        print(line)
    print("goal: ours' median best >= OFA's, and ours' median time <= 1/4 of OFA's (time ratio <= 0.25)")


if __name__ == "__main__":
    main()
