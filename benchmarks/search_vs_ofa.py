"""Search benchmark: the original once-for-all (OFA) evolution finder versus this project's search.

Both search the same accuracy predictor under the same MACs budgets, with the same MACs function:

* the OFA finder, re-implemented here from its published description: population 100, 500 generations, the top
  25% kept as parents, 50 children by mutation (each gene resampled with probability 0.1) and 25 by uniform
  crossover, every arch drawn again until it fits the budget (rejection sampling);
* ours: ``search.evolution.evolve`` (NSGA-II on index arrays) in constrained mode, as ``ofa search`` runs it, at
  each ``--effort`` level (quick, default, thorough; ``long``: 100 x 500 = 50,000 candidates, an attainable
  best); seeds = the largest and the smallest arch; the constraint is the relative excess ``macs / limit - 1``.

Landscapes:
* ``ofa_mbv3`` and ``ofa_resnet50`` at 224 px: a stand-in predictor (no trained supernet needed), a capacity term
  linear in log(MACs) plus a fixed, seeded random 2-layer MLP over the one-hot arch encoding, mixed so that the
  score correlates with log(MACs) at r = 0.7 over random archs and scaled so that what the searches find looks
  like a top-1 of 70-82. Deterministic and vectorised: what is timed is the search machinery.
* ``run``: the MLP predictor ``ofa search`` fits, on the measured accuracy table of a trained run (``--run``, every
  resolution of its space): ``ofa train --config tiny_cpu --out runs/tiny`` then
  ``ofa search runs/tiny --measure-only --table-size 200``.

Three MACs budgets per landscape, 5 seeds; every (seed, budget) runs all methods back to back, the order rotating
with the seed; one thread. Reported per budget: each method's median best predicted score, seconds and predictor
calls; goals: default's best >= OFA's in <= 1/4 of its time; thorough within 0.1 of the best any run found, in
<= 60 s. ``--sweep N`` also searches N MACs budgets on the first landscape, one search per budget and as the sweep
``ofa search`` runs for 8 or more budgets on one cost.

    python benchmarks/search_vs_ofa.py --run runs/tiny --long --sweep 40   # everything (about 25 min)
    python benchmarks/search_vs_ofa.py --quick                             # smoke run: 2 seeds, ofa_mbv3
    python benchmarks/search_vs_ofa.py --spaces ofa_resnet50 --methods ofa,default --seeds 3

Writes benchmarks/results/search_vs_ofa.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

import torch  # noqa: E402

import ofa  # noqa: E402
from ofa import Arch, SearchSpace  # noqa: E402
from search.effort import EFFORTS, Effort  # noqa: E402
from search.evolution import SharedScores, evolve, warm_seeds  # noqa: E402
from search.genes import GeneSpace  # noqa: E402
from search.run import SearchConfig  # noqa: E402

# The helper modules beside this file, looked up after the `search` package is imported (see above).
sys.path.append(str(Path(__file__).resolve().parent))
from ofa_finder import ofa_finder  # noqa: E402
from search_landscapes import TARGET_R, FittedLandscape, Landscape, Macs, Predictor  # noqa: E402

RESOLUTION = 224
SPACES = ("ofa_mbv3", "ofa_resnet50", "run")
LONG = Effort(population=100, generations=500)  # 50,000 candidates: what a long run attains
# ofa_mbv3 at 224 spans about 121M-566M MACs: the usual mobile budgets. ofa_resnet50 gets fractions of its range.
FIXED_BUDGETS = {"ofa_mbv3": (300e6, 400e6, 500e6)}
RANGE_FRACTIONS = (0.3, 0.5, 0.7)


# -- ours ----------------------------------------------------------------------------------------------------
def our_search(genes: GeneSpace, predictor: Predictor, macs: Macs, limit: float, *, seed: int, effort: Effort,
               seeds: Sequence[Arch] = (), score: Callable | None = None) -> dict:
    """``evolve`` as ``ofa search`` runs it for one MACs budget (no accuracy table here, so no measured seeds);
    ``score`` (default: ``predictor``) is what the search calls, e.g. a cache in front of it."""
    cfg = SearchConfig(run_dir=".")
    space = genes.space
    start = time.perf_counter()
    res = evolve(genes, score or predictor, generations=effort.generations, population=effort.population,
                 mode="constrained", violations=lambda a: [macs(a) / limit - 1.0],
                 seeds=[space.largest(), space.smallest()] + list(seeds), seed=seed,
                 mutation_prob=cfg.mutation_prob, crossover_prob=cfg.crossover_prob,
                 stage_crossover=effort.stage_crossover)
    seconds = time.perf_counter() - start
    best = res.best()
    return {"best": best.score, "best_macs": macs(best.arch), "seconds": seconds,
            "predictor_calls": predictor.calls, "predictor_batches": predictor.batches, "trials": res.trials,
            "macs_calls": macs.misses, "history": res.history, "result": res}


def best_at(history: list[tuple[int, float]], calls: int) -> float:
    """The best score a run had reached once it had made ``calls`` predictor calls (its first point >= calls)."""
    for c, v in history:
        if c >= calls:
            return v
    return history[-1][1]


# -- the benchmark -------------------------------------------------------------------------------------------
def budgets_for(name: str, net, space: SearchSpace, fractions: Sequence[float] = RANGE_FRACTIONS) -> list[float]:
    if name in FIXED_BUDGETS and fractions is RANGE_FRACTIONS:
        return list(FIXED_BUDGETS[name])
    low, high = net.costs(space.smallest())[0], net.costs(space.largest())[0]
    step = 1e7 if high > 1e9 else 1e6 if high > 1e7 else 1e4  # round to a readable unit
    return [round((low + f * (high - low)) / step) * step for f in fractions]


def run_method(method: str, net, landscape, limit: float, seed: int, args) -> dict:
    macs = Macs(net)
    predictor = Predictor(landscape, macs)
    if method == "ofa":
        return ofa_finder(landscape.genes, predictor, macs, limit, seed=seed, generations=args.ofa_generations)
    effort = LONG if method == "long" else EFFORTS[method]
    if method == "default" and (args.generations or args.population):
        effort = Effort(args.population or effort.population, args.generations or effort.generations)
    r = our_search(landscape.genes, predictor, macs, limit, seed=seed, effort=effort)
    r.pop("result")
    return r


def summarise(runs: list[dict], space: str, limit: float, methods: list[str]) -> dict:
    here = [r for r in runs if r["space"] == space and r["budget_macs"] == limit]
    out: dict = {"space": space, "budget_macs": limit, "best_any": max(r["best"] for r in here)}
    for m in methods:
        rs = [r for r in here if r["method"] == m]
        out[m] = {k: statistics.median(r[k] for r in rs) for k in ("best", "seconds", "predictor_calls",
                                                                   "macs_calls", "best_macs")}
        out[m]["runs"] = len(rs)
    by_seed = {m: {r["seed"]: r for r in here if r["method"] == m} for m in methods}
    pairs = [(o, by_seed["default"][s]) for s, o in by_seed["ofa"].items()]
    out["ofa"]["best_at_default_calls"] = statistics.median(best_at(o["history"], u["predictor_calls"])
                                                            for o, u in pairs)
    out["default_ge_ofa_seeds"] = sum(u["best"] >= o["best"] - 1e-9 for o, u in pairs)
    out["time_ratio"] = out["default"]["seconds"] / out["ofa"]["seconds"]
    out["goal_default_best"] = out["default"]["best"] >= out["ofa"]["best"] - 1e-9
    out["goal_default_time"] = out["time_ratio"] <= 0.25
    if "thorough" in methods:
        out["thorough_gap"] = out["best_any"] - out["thorough"]["best"]
        out["goal_thorough"] = out["thorough_gap"] <= 0.1 and out["thorough"]["seconds"] <= 60
    return out


def sweep(net, landscape, space: SearchSpace, count: int, seed: int) -> dict:
    """``count`` MACs budgets across the space's range at the default effort: one search per budget ("alone"),
    and as ``ofa search`` runs that many budgets on one cost ("sweep", ``Effort.sweep``): one Pareto search over
    MACs, then a short search per budget seeded with the best archs found so far that fit it, one score cache."""
    limits = budgets_for("sweep", net, space, [(i + 0.5) / count for i in range(count)])
    effort = EFFORTS["default"]
    front_size, budget_size = effort.sweep()
    out = {"budgets": count, "effort": [effort.population, effort.generations],
           "sweep_sizes": {"front": [front_size.population, front_size.generations],
                           "per_budget": [budget_size.population, budget_size.generations]}}
    for mode in ("alone", "sweep"):
        macs = Macs(net)
        counted = Predictor(landscape, macs)
        shared = SharedScores(counted)
        bests = []
        start = time.perf_counter()
        if mode == "sweep":
            front = evolve(landscape.genes, shared, generations=front_size.generations,
                           population=front_size.population, mode="pareto", cost=macs,
                           seeds=[space.largest(), space.smallest()], seed=seed,
                           stage_crossover=front_size.stage_crossover)
            found = front.top(len(front.evaluated))
        for limit in limits:
            if mode == "alone":
                r = our_search(landscape.genes, counted, macs, limit, seed=seed, effort=effort)
            else:
                seeds = warm_seeds(found, lambda a, limit=limit, macs=macs: macs(a) <= limit,
                                   budget_size.population // 4)
                r = our_search(landscape.genes, counted, macs, limit, seed=seed, effort=budget_size, seeds=seeds,
                               score=shared)
                found += r["result"].top(budget_size.population // 4)
            bests.append(r["best"])
        seconds = time.perf_counter() - start
        out[mode] = {"seconds": seconds, "seconds_per_budget": seconds / count,
                     "predictor_calls": counted.calls, "bests": bests}
    gains = [s - a for s, a in zip(out["sweep"]["bests"], out["alone"]["bests"])]
    out["sweep_minus_alone"] = {"median": statistics.median(gains), "min": min(gains), "max": max(gains),
                                "better": sum(g > 1e-9 for g in gains), "worse": sum(g < -1e-9 for g in gains)}
    return out


def load_space(name: str, args):
    """(net, space, landscape) of a benchmark space: a stand-in over a registered supernet at 224 px, or
    ``run``: the MLP predictor fitted to the accuracy table of the run directory ``--run``."""
    if name == "run":
        run = Path(args.run)
        if not (run / "search" / "accuracy_table.csv").is_file():
            raise SystemExit(f"space 'run' needs {run}/search/accuracy_table.csv: train and measure one with\n"
                             f"  ofa train --config tiny_cpu --out {run}\n"
                             f"  ofa search {run} --measure-only --table-size 200")
        net = ofa.load(run / "supernet.safetensors")
        return net, net.space, FittedLandscape(run, net)
    net = ofa.create_supernet(name)
    space = net.space.restrict(resolutions=[RESOLUTION])
    return net, space, Landscape(net, space)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spaces", default=",".join(SPACES), help=f"comma-separated, from {','.join(SPACES)}")
    p.add_argument("--run", default="runs/tiny", help="space 'run': a trained run with a measured accuracy table")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--ofa-generations", type=int, default=500)
    p.add_argument("--methods", default="ofa,quick,default,thorough",
                   help="comma-separated, from ofa, quick, default, thorough, long (50,000 candidates)")
    p.add_argument("--long", action="store_true", help="add the 50,000-candidate run (an attainable best)")
    p.add_argument("--generations", type=int, default=None, help="override the default effort's")
    p.add_argument("--population", type=int, default=None, help="override the default effort's")
    p.add_argument("--sweep", type=int, default=0, metavar="N",
                   help="also search N MACs budgets on the first space, one by one and as a sweep")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, ofa_mbv3 only, 50 OFA generations")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "search_vs_ofa.json"))
    args = p.parse_args()
    if args.quick:
        args.seeds, args.spaces, args.ofa_generations = 2, "ofa_mbv3", 50
    torch.set_num_threads(1)
    methods = args.methods.split(",") + (["long"] if args.long and "long" not in args.methods else [])
    unknown = set(methods) - {"ofa", "long", *EFFORTS}
    if unknown or not {"ofa", "default"} <= set(methods):
        raise SystemExit(f"--methods needs ofa and default, from ofa, long, {', '.join(EFFORTS)}; got {methods}")

    landscapes, runs, summary, sweeps = {}, [], [], {}
    for name in args.spaces.split(","):
        if name not in SPACES:
            raise SystemExit(f"unknown space {name!r}; allowed: {', '.join(SPACES)}")
        net, space, landscape = load_space(name, args)
        budgets = budgets_for(name, net, space)
        landscapes[name] = {"budgets_macs": budgets, "genes": len(landscape.genes.genes),
                            "smallest_macs": net.costs(space.smallest())[0],
                            "largest_macs": net.costs(space.largest())[0], **landscape.describe(net, space)}
        print(f"{name}: {json.dumps(landscapes[name])}", flush=True)
        for seed in range(args.seeds):
            for limit in budgets:
                # rotate which method goes first, so that none always runs on the warmer machine
                order = methods[seed % len(methods):] + methods[:seed % len(methods)]
                for method in order:
                    r = run_method(method, net, landscape, limit, seed, args)
                    runs.append({"space": name, "budget_macs": limit, "seed": seed, "method": method, **r})
                    print(f"  seed {seed} {limit / 1e6:8.2f}M {method:9s} best {r['best']:.3f} "
                          f"({r['best_macs'] / 1e6:.2f}M MACs) {r['seconds']:6.2f}s "
                          f"{r['predictor_calls']} predictor calls", flush=True)
        summary += [summarise(runs, name, limit, methods) for limit in budgets]
        if args.sweep and not sweeps:
            sweeps[name] = sweep(net, landscape, space, args.sweep, seed=0)

    result = {"host": platform.node(), "python": platform.python_version(), "threads": torch.get_num_threads(),
              "note": "CPU timings on a shared machine; landscapes: see the module docstring",
              "settings": {"seeds": args.seeds, "ofa": {"population": 100, "generations": args.ofa_generations,
                                                         "parent_ratio": 0.25, "mutation_ratio": 0.5,
                                                         "mutate_prob": 0.1},
                           "efforts": {k: [e.population, e.generations] for k, e in EFFORTS.items()},
                           "long": [LONG.population, LONG.generations]},
              "target_r": TARGET_R, "landscapes": landscapes, "summary": summary, "sweep": sweeps,
              "runs": [{k: v for k, v in r.items() if k != "history"} | {"history_every_10": r["history"][::10]}
                       for r in runs]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print_table(summary, methods, args.seeds)
    for name, s in sweeps.items():
        print(f"\nsweep of {s['budgets']} MACs budgets on {name} (default effort {s['effort'][0]} x "
              f"{s['effort'][1]}):")
        for mode in ("alone", "sweep"):
            m = s[mode]
            print(f"  {mode:<7} {m['seconds']:7.1f} s total, {m['seconds_per_budget']:.2f} s per budget, "
                  f"{m['predictor_calls']} predictor calls")
        g = s["sweep_minus_alone"]
        print(f"  sweep - alone best: median {g['median']:+.3f} (min {g['min']:+.3f}, max {g['max']:+.3f}); "
              f"better at {g['better']}, worse at {g['worse']} of {s['budgets']}")
    print(f"\nwrote {out}")


def print_table(summary: list[dict], methods: list[str], seeds: int) -> None:
    print(f"\nmedians over {seeds} seeds: best predicted score within the budget, seconds")
    head = f"{'space':<13}{'budget':>10}"
    for m in methods:
        head += f"{m + ' best':>15}{m[:5] + ' s':>9}"
    head += f"{'best any':>10}{'default>=OFA':>14}{'time ratio':>12}{'thorough gap':>14}"
    print(head)
    for s in summary:
        line = f"{s['space']:<13}{s['budget_macs'] / 1e6:9.2f}M"
        for m in methods:
            line += f"{s[m]['best']:15.3f}{s[m]['seconds']:9.2f}"
        line += (f"{s['best_any']:10.3f}{'yes' if s['goal_default_best'] else 'no':>9} "
                 f"({s['default_ge_ofa_seeds']}/{s['ofa']['runs']})"
                 f"{s['time_ratio']:8.3f} {'ok' if s['goal_default_time'] else 'no'}")
        if "thorough_gap" in s:
            line += f"{s['thorough_gap']:10.3f} {'ok' if s['goal_thorough'] else 'no'}"
        print(line)
    print("goals: default's median best >= OFA's in <= 1/4 of its time; thorough's median best within 0.1 of "
          "the best any run found, in <= 60 s")


if __name__ == "__main__":
    main()
