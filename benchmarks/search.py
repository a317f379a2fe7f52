"""Search benchmark on a tiny trained run (mnist5k):

* seconds per budget of the predictor-driven NSGA-II search;
* the chosen subnet's test top-1 versus the winner of N random subnets under the same budget (the winner picked
  on the validation split, both then measured on the test split; goal: >= the random winner);
* predictor RMSE / Kendall tau (held out) versus the number of measured subnets (e.g. 100, 300, 1000);
* search quality versus plain random search at equal trials (best predicted value under the budget).

    python benchmarks/search.py --run runs/tiny                     # a run written by `ofa train`
    python benchmarks/search.py --run runs/tiny --sizes 50,100 --random 40 --val-limit 200   # quicker

Measurements go to RUN/search/bench.db (an Optuna storage: a rerun reuses them). Writes
benchmarks/results/search.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

# this file is named search.py: drop its folder from the path so `import search` finds the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import ofa  # noqa: E402
from search.budgets import CostModel, parse_budget  # noqa: E402
from search.evolution import evolve  # noqa: E402
from search.genes import GeneSpace  # noqa: E402
from search.predictor import fit_predictor  # noqa: E402
from search.table import measure_arch, measure_table, read_table  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory with supernet.safetensors and config.yaml")
    p.add_argument("--budgets", default="macs=3M,macs=8M", help="comma-separated KIND=VALUE budgets")
    p.add_argument("--sizes", default="100,300,1000", help="table sizes for the predictor curve")
    p.add_argument("--random", type=int, default=200, help="random subnets per budget for the baseline")
    p.add_argument("--generations", type=int, default=40)
    p.add_argument("--population", type=int, default=50)
    p.add_argument("--rerank", type=int, default=5, help="top predicted subnets re-measured on validation")
    p.add_argument("--val-limit", type=int, default=None)
    p.add_argument("--calib-batches", type=int, default=4)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "search.json"))
    args = p.parse_args()

    from ofa.data import load_run_data

    run = Path(args.run)
    net, data = ofa.load(run / "supernet.safetensors"), load_run_data(run)
    storage = f"sqlite:///{(run / 'search' / 'bench.db').resolve()}"
    genes, costs = GeneSpace(net.space), CostModel(net)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    result: dict = {"run": str(run), "predictor_curve": [], "budgets": []}

    def val(arch):
        return measure_arch(net, data, arch, args.calib_batches, 128, "val", args.val_limit)

    # predictor quality versus table size (each size its own stratified plan; shared archs are measured once)
    for k in sizes:
        t0 = time.perf_counter()
        measure_table(net, data, storage, k, calib_batches=args.calib_batches, val_limit=args.val_limit)
        rows = read_table(storage)
        keys = [a.key() for a in _plan(net, k)]
        rows = [r for r in rows if r["key"] in set(keys)]
        archs = [net.space.arch_from_json(r["arch"]) for r in rows]
        for family in ("mlp", "ridge"):
            pred = fit_predictor(genes, archs, [r["top1"] for r in rows], family=family, refit_all=False)
            result["predictor_curve"].append({"table_size": len(rows), "family": family, **pred.held_out})
            print(f"table {len(rows):5d} {family:6s} RMSE {pred.held_out['rmse']:.3f} "
                  f"Kendall tau {pred.held_out['kendall_tau']:.3f} ({time.perf_counter() - t0:.0f}s)")
    rows = read_table(storage)
    archs = [net.space.arch_from_json(r["arch"]) for r in rows]
    predictor = fit_predictor(genes, archs, [r["top1"] for r in rows], family="mlp")

    def score(batch):
        return predictor.predict(batch)

    trials = args.generations * args.population
    for text in args.budgets.split(","):
        b = parse_budget(text)
        t0 = time.perf_counter()
        res = evolve(genes, score, generations=args.generations, population=args.population,
                     violations=lambda a, b=b: costs.violations(a, b),
                     seeds=[net.space.largest(), net.space.smallest()])
        seconds = time.perf_counter() - t0
        # as `ofa search` does: the top-5 predicted measured on validation, the best kept
        chosen = max(res.top(args.rerank), key=lambda e: val(e.arch).top1)
        # plain random search with the same number of predictor calls
        rng = random.Random(1)
        pool = [a for a in (net.space.sample(rng) for _ in range(trials)) if costs.fits(a, b)]
        random_best = float(max(score(pool))) if pool else None
        # N random subnets under the budget, the winner picked on validation
        rng = random.Random(2)
        candidates: dict = {}
        while len(candidates) < args.random:
            a = net.space.sample(rng)
            if costs.fits(a, b):
                candidates[a.key()] = a
        on_val = {k: val(a).top1 for k, a in candidates.items()}
        winner = candidates[max(on_val, key=on_val.get)]
        test_chosen = measure_arch(net, data, chosen.arch, args.calib_batches, 128, "test")
        test_winner = measure_arch(net, data, winner, args.calib_batches, 128, "test")
        entry = {"budget": text, "seconds": seconds, "trials": trials, "distinct_archs": len(res.evaluated),
                 "history_every_5": res.history[::5] + [res.history[-1]],
                 "search_predicted": chosen.score, "random_search_predicted": random_best,
                 "search_test_top1": test_chosen.top1, "search_test_ci": [test_chosen.ci_low, test_chosen.ci_high],
                 "random_winner_test_top1": test_winner.top1,
                 "random_winner_test_ci": [test_winner.ci_low, test_winner.ci_high],
                 "random_subnets": args.random, "reranked_on_val": args.rerank, "goal_met": test_chosen.top1 >= test_winner.top1}
        result["budgets"].append(entry)
        print(f"{text}: {seconds:.1f}s for {trials} trials; predicted {chosen.score:.2f} (random search "
              f"{random_best:.2f}); test top-1 {test_chosen.top1:.2f} vs {args.random}-random winner "
              f"{test_winner.top1:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


def _plan(net, k):
    from search.table import plan_archs

    return plan_archs(net, k, seed=0)


if __name__ == "__main__":
    main()
