"""Run every benchmark and print one summary table: each figure next to its goal.

    python benchmarks/run_all.py                      # CPU; trains the demo run first if --run is not given
    python benchmarks/run_all.py --device cuda        # the same scripts on a GPU (core and train take --device)
    python benchmarks/run_all.py --only core deploy   # a subset

Each script writes benchmarks/results/NAME.json; this one reads them back and writes
benchmarks/results/summary.json. Timings depend on the machine and its load: run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ORDER = ("core", "train", "scratch_vs_ofa", "search", "deploy")


def _core(d: dict) -> list[dict]:
    return d.get("summary", [])


def _train(d: dict) -> list[dict]:
    return [{"figure": f"sandwich step / sum of static fwd+bwd ({d['supernet']}, b={d['batch']})",
             "value": d["ratio_median"], "goal": f"<= {d['goal_ratio']}", "met": d["ratio_median"] <= d["goal_ratio"]},
            {"figure": "training images/s", "value": d["images_per_s"], "goal": "reported", "met": None}]


def _scratch(d: dict) -> list[dict]:
    rows = [{"figure": f"test top-1 {r['subnet']}: supernet vs trained alone",
             "value": f"{r['ofa']['top1']:.1f} vs {r['scratch']['top1']:.1f}", "goal": "reported", "met": None}
            for r in d.get("rows", [])]
    rows.append({"figure": "mean top-1 supernet subnets vs scratch", "value":
                 f"{d['mean_top1_ofa']:.1f} vs {d['mean_top1_scratch']:.1f}", "goal": "supernet >= scratch",
                 "met": d["mean_top1_ofa"] >= d["mean_top1_scratch"]})
    return rows


def _search(d: dict) -> list[dict]:
    rows = []
    for b in d.get("budgets", []):
        rows.append({"figure": f"search {b['budget']}: chosen vs {b['random_subnets']}-random winner (test top-1)",
                     "value": f"{b['search_test_top1']:.1f} vs {b['random_winner_test_top1']:.1f}",
                     "goal": "chosen >= winner", "met": b["goal_met"]})
        rows.append({"figure": f"search {b['budget']}: seconds", "value": b["seconds"], "goal": "reported",
                     "met": None})
    for p in d.get("predictor_curve", []):
        rows.append({"figure": f"predictor {p['family']} on {p['table_size']} subnets: Kendall tau",
                     "value": p["kendall_tau"], "goal": "reported", "met": None})
    return rows


def _deploy(d: dict) -> list[dict]:
    goals = d.get("goals", {})
    lut = d["lut"]
    mape = lut.get("mape_pct", min(lut["mape_sum_pct"], lut["mape_corrected_pct"]))
    rows = [{"figure": "latency table MAPE (30 held-out subnets)", "value": mape,
             "goal": f"<= {goals.get('lut_mape_pct', 10)}", "met": mape <= goals.get("lut_mape_pct", 10)},
            {"figure": "width switch (us)", "value": d["switch"]["switch_us"],
             "goal": f"<= {goals.get('switch_us', 50)}", "met": d["switch"]["switch_us"] <= goals.get("switch_us", 50)}]
    ratios = [f["ratio_median"] for f in d.get("folding", [])]
    if ratios:
        rows.append({"figure": "deployed / plain-BN latency (worst median)", "value": max(ratios),
                     "goal": "<= 1.0", "met": max(ratios) <= 1.0})
    return rows + _int8(d.get("int8"), goals)


def _int8(q: dict | None, goals: dict) -> list[dict]:
    if not q:
        return []
    rows = []
    for r in q["resnet18_224"]:
        ratio = next(v for k, v in r["variants"].items() if k.startswith("deploy"))["ratio"]
        rows.append({"figure": f"int8 / float32 latency, resnet18 {r['subnet']} 224 px", "value": ratio,
                     "goal": f"<= {goals.get('int8_over_float_resnet18_max', 0.5)}",
                     "met": ratio <= goals.get("int8_over_float_resnet18_max", 0.5)})
    mape = q["lut"]["mape_pct"]
    rows.append({"figure": "int8 latency table MAPE (30 held-out)", "value": mape,
                 "goal": f"<= {goals.get('int8_lut_mape_pct', 10)}", "met": mape <= goals.get("int8_lut_mape_pct", 10)})
    for device, r in (q.get("run") or {}).get("devices", {}).items():
        drop = r["top1"]["drop_pp"]
        rows.append({"figure": f"int8 top-1 drop, {device} (pp)", "value": drop, "goal": "<= 1.0",
                     "met": drop <= goals.get("int8_top1_drop_pp_max", 1.0)})
    return rows


EXTRACT = {"core": _core, "train": _train, "scratch_vs_ofa": _scratch, "search": _search, "deploy": _deploy}


def run_script(name: str, device: str, run: Path | None) -> int:
    cmd = [sys.executable, str(HERE / f"{name}.py")]
    if name in ("core", "train"):
        cmd += ["--device", device]
    if name in ("search", "scratch_vs_ofa", "deploy") and run is not None:
        cmd += ["--run", str(run)]
    print(f"\n=== {' '.join(cmd[1:])}", flush=True)
    return subprocess.call(cmd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (core and train benchmarks)")
    parser.add_argument("--run", help="a trained run of the shipped tiny_cpu config for the search and scratch benchmarks "
                                      "(default: runs/demo, made with `ofa demo` when missing)")
    parser.add_argument("--only", nargs="+", choices=ORDER, default=list(ORDER))
    parser.add_argument("--summary-only", action="store_true", help="only print the table from existing results")
    args = parser.parse_args(argv)
    run = Path(args.run) if args.run else Path("runs/demo")
    if not args.summary_only:
        if any(n in ("search", "scratch_vs_ofa", "deploy") for n in args.only) and not (run / "supernet.safetensors").is_file():
            subprocess.check_call([sys.executable, "-m", "ofa.cli", "demo", "--out", str(run), "--quiet"])
        failed = [n for n in args.only if run_script(n, args.device, run) != 0]
        if failed:
            print(f"failed: {failed}", file=sys.stderr)
    rows = []
    for name in args.only:
        path = RESULTS / f"{name}.json"
        if path.is_file():
            rows += [{"benchmark": name, **r} for r in EXTRACT[name](json.loads(path.read_text()))]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(rows, indent=2))
    width = max([len(r["figure"]) for r in rows] + [10])
    print(f"\n{'figure':{width}s}  {'measured':>16s}  {'goal':>20s}  met")
    for r in rows:
        value = f"{r['value']:.3f}" if isinstance(r["value"], float) else str(r["value"])
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        print(f"{r['figure']:{width}s}  {value:>16s}  {r['goal']:>20s}  {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
