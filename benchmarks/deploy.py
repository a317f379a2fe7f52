"""Deploy benchmark: deployed versus plain networks, latency-table accuracy, latency versus MACs, width switching,
and the effect of rounding channel counts to multiples of 8.

All in one process, CPU, for subnets across the cost range of a supernet:
(a) the deployed network (as deploy.load returns it: BN folded, channels-last weights) versus the same arch
    as a plain PyTorch network with separate BN, batch 1 and 32, as interleaved A/B pairs (both see the same machine load): median ratio and quartiles;
(b) the latency table's predicted versus measured latency on held-out random subnets (MAPE; goal <= 10%);
(c) latency ratio versus MACs ratio relative to the largest arch (reported: where MACs mislead);
(d) SlimmableNet width-switch time and memory growth over 10,000 switches (goal <= 50 us); (d3) long chains
    (up to 8 nested widths of ofa_resnet_tiny and ofa_mbv3_tiny): memory against the largest dense network with
    and without the default memory limit (goal <= 2), and each width's slimmable / dense ratio, derived or lean;
(e) time per MAC with channels rounded to multiples of 8 (divisor 8) versus unrounded counts (divisor 1);
(f) int8 against float32 in onnxruntime, batch 1: the largest and a middle ``ofa_resnet18`` subnet at 224 px
    (random weights; goal int8 / float32 <= 0.5), for ONNX Runtime's quantization variants (QDQ or QOperator,
    reduce_range, uint8 or int8 activations, per-channel or per-tensor weights, graph optimization level), with the
    CPU's int8 instruction sets from /proc/cpuinfo;
(g) the int8 latency table (``ofa profile --int8``) on 30 held-out subnets (MAPE; goal <= 10%);
(h) with ``--run RUN`` (e.g. runs/demo): every device of the run deployed in int8 (in a copy): test top-1 int8
    against float32 with the paired 95% interval of the drop (goal within 1 pp), latency and size ratios.

    python benchmarks/deploy.py                          # ofa_resnet_tiny, torch's thread count
    python benchmarks/deploy.py --threads 1 --pairs 40
    python benchmarks/deploy.py --int8-only --threads 1 --run runs/demo    # (f)-(h) only: results/deploy_int8.json

Writes benchmarks/results/deploy.json and prints each figure next to its goal.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

# Run as `python benchmarks/deploy.py`, this file's folder comes first on sys.path and its name would shadow the
# `deploy` package: drop that folder before importing it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

import ofa  # noqa: E402
from deploy.profile import ProfileSettings, profile  # noqa: E402
from deploy.slimmable import SlimmableNet, state_bytes  # noqa: E402
from ofa.fold import prepare_for_inference  # noqa: E402
from ofa.timing import num_threads, time_pair  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parent))  # the sibling benchmark modules, after the packages
from deploy_int8 import GOALS as INT8_GOALS  # noqa: E402
from deploy_int8 import main_int8, once_seconds  # noqa: E402

GOALS = {"deployed_over_plain_max": 1.0, "lut_mape_pct": 10.0, "switch_us": 50.0, "slim_over_dense_max": 1.05,
         "slim_memory_over_largest_dense_max": 2.0, **INT8_GOALS}


def ab_ratio(a, b, x, pairs: int, warmup: int = 5) -> dict[str, float]:
    """Interleaved timings of a and b (ofa.timing.time_pair); the ratio a/b per pair, summarised (median and
    quartiles)."""
    ta, tb = time_pair(a, b, x, repeats=pairs, warmup=warmup)
    ratios = [t_a / t_b for t_a, t_b in zip(ta, tb)]
    q = statistics.quantiles(ratios, n=4)
    return {"ratio_median": statistics.median(ratios), "ratio_q1": q[0], "ratio_q3": q[2],
            "a_ms": statistics.median(ta), "b_ms": statistics.median(tb)}


@torch.inference_mode()
def median_ms(model, x, repeats: int) -> float:
    for _ in range(3):
        model(x)
    return statistics.median(once_seconds(model, x) for _ in range(repeats)) * 1e3


def cost_range(net, n: int, seed: int = 0) -> list:
    """n archs spread over the cost range: the smallest, the largest, and random archs at MACs quantiles."""
    rng = random.Random(seed)
    pool = sorted((net.space.sample(rng) for _ in range(200)), key=lambda a: net.costs(a)[0])
    picks = [net.space.smallest()] + [pool[int(i * (len(pool) - 1) / (n - 3))] for i in range(n - 2)]
    return picks + [net.space.largest()]


def bench_folding(net, archs, pairs: int) -> list[dict]:
    rows = []
    for arch in archs:
        plain = net.extract(arch).eval()
        folded = prepare_for_inference(plain)
        for batch in (1, 32):
            x = torch.randn(batch, net.in_chans, arch.resolution, arch.resolution)
            rows.append({"arch": arch.to_dict(), "macs": net.costs(arch)[0], "batch": batch,
                         **ab_ratio(folded, plain, x, pairs)})
    return rows


def bench_macs(net, archs, repeats: int) -> list[dict]:
    """Latency and MACs of each arch relative to the largest (the last arch), timed round-robin so every arch
    sees the same machine load."""
    models = [prepare_for_inference(net.extract(a)) for a in archs]
    inputs = [torch.randn(1, net.in_chans, a.resolution, a.resolution) for a in archs]
    times: list[list[float]] = [[] for _ in archs]
    with torch.inference_mode():
        for m, x in zip(models, inputs):
            for _ in range(3):
                m(x)
        for _ in range(repeats):
            for i, (m, x) in enumerate(zip(models, inputs)):
                times[i].append(once_seconds(m, x) * 1e3)
    ms = [statistics.median(t) for t in times]
    big_macs = net.costs(archs[-1])[0]
    return [{"macs_ratio": net.costs(a)[0] / big_macs, "latency_ratio": t / ms[-1], "ms": t}
            for a, t in zip(archs, ms)]


def nested_chain(space) -> list:
    """The smallest and the largest arch, the smallest taking the largest's kernel sizes (widths must share them)."""
    small, big = space.smallest(), space.largest()
    if small.kernels is not None:
        small = replace(small, kernels=tuple(row[:d] for row, d in zip(big.kernels, small.depths)))
    return [small, big]


def bench_switch(net) -> dict:
    chain = nested_chain(net.space)
    dense = [net.extract(a).eval() for a in chain]
    slim = SlimmableNet.from_dense(dense)
    max_diff = 0.0
    with torch.inference_mode():
        for i, (arch, d) in enumerate(zip(chain, dense)):
            slim.set_width(i)
            x = torch.randn(8, net.in_chans, arch.resolution, arch.resolution)
            max_diff = max(max_diff, (slim(x) - d(x)).abs().max().item())
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    for k in range(10_000):
        slim.set_width(k % 2)
    us = (time.perf_counter() - start) / 10_000 * 1e6
    growth = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    largest = state_bytes(dense[-1])
    return {"switch_us": us, "memory_growth_bytes": growth, "switches": 10_000, "max_abs_diff_vs_dense": max_diff,
            "memory_over_largest_dense": slim.memory_bytes()["total"] / largest, "derived_widths": slim.derived_widths}


def bench_slim_speed(net, pairs: int) -> list[dict]:
    """Each width of a fast-mode SlimmableNet against its dense deployed network, interleaved, batch 1 and 32."""
    chain = nested_chain(net.space)
    dense = [net.extract(a).eval() for a in chain]
    return widths_against_dense(net, SlimmableNet.from_dense(dense), chain, dense, pairs)


def widths_against_dense(net, slim: SlimmableNet, chain: list, dense: list, pairs: int) -> list[dict]:
    """Every width of ``slim`` timed interleaved against its dense deployed network, batch 1 and 32."""
    rows = []
    for i, (arch, d) in enumerate(zip(chain, dense)):
        slim.set_width(i)
        deployed = prepare_for_inference(d)
        for batch in (1, 32):
            x = torch.randn(batch, net.in_chans, arch.resolution, arch.resolution)
            with torch.inference_mode():
                rows.append({"width": i, "derived": i in slim.derived_widths, "macs": net.costs(arch)[0],
                             "batch": batch, **ab_ratio(slim, deployed, x, pairs if batch == 1 else max(5, pairs // 3))})
    return rows


def long_chain(space, n: int = 8) -> list:
    """Up to n nested archs from the smallest to the largest, one dimension (every stage alike) growing by one
    choice per step, in turn; each arch takes the largest's per-block options (kernels: nested widths share them)."""
    big, steps = space.largest(), {"resolution": 0, "stem": 0, "depths": 0, "widths": 0, "expands": 0}

    def arch():
        def at(kind, choices):
            return choices[min(steps[kind], len(choices) - 1)]
        depths = tuple(at("depths", d) for d in space.depths)
        return replace(big, resolution=at("resolution", space.resolutions), depths=depths,
                       widths=tuple(at("widths", w) for w in space.widths),
                       expands=tuple((at("expands", space.expands[s]),) * depths[s] for s in range(len(depths))),
                       stem=None if space.stem is None else at("stem", space.stem),
                       **{o: tuple(row[:d] for row, d in zip(getattr(big, o), depths)) for o in space.block_options()})

    chain = [arch()]
    while chain[-1] != big:
        for kind in steps:
            steps[kind] += 1
            if arch() != chain[-1]:
                chain.append(arch())
    keep = sorted({round(k * (len(chain) - 1) / (n - 1)) for k in range(n)}) if len(chain) > n else range(len(chain))
    return [chain[k] for k in keep]


def bench_slim_chains(pairs: int) -> dict:
    """Per family, a long nested chain as one SlimmableNet (fast mode, default memory limit): its memory against
    the largest dense network's (and without a limit), and every width against its dense deployed network."""
    out = {}
    for name in ("ofa_resnet_tiny", "ofa_mbv3_tiny"):
        net = ofa.create_supernet(name).eval()
        chain = long_chain(net.space)
        dense = [net.extract(a).eval() for a in chain]
        slim, unlimited = SlimmableNet.from_dense(dense), SlimmableNet.from_dense(dense, memory_limit=None)
        slim.prepare(), unlimited.prepare()
        memory, before = slim.memory_bytes(), unlimited.memory_bytes()
        rows = widths_against_dense(net, slim, chain, dense, pairs)
        out[name] = {"widths": len(chain), "memory_limit": slim.memory_limit, "derived_widths": slim.derived_widths,
                     "memory_over_largest_dense": memory["total"] / memory["largest_dense"],
                     "memory_over_largest_dense_unlimited": before["total"] / before["largest_dense"],
                     "per_width": rows}
        del unlimited
    return out


def bench_divisor(name: str, n: int, repeats: int, seed: int = 0) -> dict:
    """Median ms per million MACs of the same archs (multipliers) with channels rounded to 8 versus not."""
    out = {}
    rng = random.Random(seed)
    nets = {d: ofa.create_supernet(name, divisor=d).eval() for d in (8, 1)}
    archs = [nets[8].space.sample(rng) for _ in range(n)]
    for d, net in nets.items():
        per_mmac, odd = [], 0
        for a in archs:
            arch = _nearest_arch(net, a)
            spec = net.plan.static_spec(arch)
            odd += sum(c % 2 for stage in spec["stages"] for b in stage for c in b[1:3])
            model = prepare_for_inference(net.extract(arch))
            ms = median_ms(model, torch.randn(1, net.in_chans, arch.resolution, arch.resolution), repeats)
            per_mmac.append(ms / (net.costs(arch)[0] / 1e6))
        out[f"divisor{d}"] = {"ms_per_mmac_median": statistics.median(per_mmac), "odd_channel_counts": odd}
    out["slowdown_unrounded"] = out["divisor1"]["ms_per_mmac_median"] / out["divisor8"]["ms_per_mmac_median"]
    return out


def _nearest_arch(net, arch):
    """The same multipliers in another divisor's space (choices that rounded alike may have been merged)."""
    space = net.space

    def near(v, choices):
        return min(choices, key=lambda c: abs(c - v))

    d = arch.to_dict()
    d["widths"] = [near(w, space.widths[s]) for s, w in enumerate(d["widths"])]
    d["expands"] = [[near(e, space.expands[s]) for e in row] for s, row in enumerate(d["expands"])]
    if "stem" in d and space.stem is not None:
        d["stem"] = near(d["stem"], space.stem)
    return space.arch_from_dict(d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supernet", default="ofa_resnet_tiny")
    parser.add_argument("--archs", type=int, default=6, help="subnets across the cost range")
    parser.add_argument("--pairs", type=int, default=30, help="interleaved A/B pairs per measurement")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--run", help="a trained run (e.g. runs/demo): also deploy its devices in int8, in a copy")
    parser.add_argument("--int8-only", action="store_true", help="only the int8 figures (f)-(h)")
    parser.add_argument("--out", default=None, help="results JSON (default results/deploy.json, or "
                                                    "results/deploy_int8.json with --int8-only)")
    args = parser.parse_args()
    args.out = args.out or str(Path(__file__).parent / "results" / f"deploy{'_int8' if args.int8_only else ''}.json")
    torch.manual_seed(0)
    net = ofa.create_supernet(args.supernet).eval()
    if args.int8_only:
        with num_threads(args.threads) as threads:
            result = {"host": platform.node(), "torch": torch.__version__, "goals": GOALS,
                      "int8": main_int8(args, threads)}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"\nwrote {args.out}")
        return
    with num_threads(args.threads) as threads:
        archs = cost_range(net, args.archs)
        print(f"{args.supernet}: {len(archs)} archs, {threads} thread(s), host {platform.node()}")
        folding = bench_folding(net, archs, args.pairs)
        table = profile(net, device=platform.node(), settings=ProfileSettings(), progress=False)
        macs = bench_macs(net, archs, args.pairs)
        switch = bench_switch(net)
        slim_speed = bench_slim_speed(net, args.pairs)
        slim_chains = bench_slim_chains(args.pairs)
        divisor = bench_divisor(args.supernet, 8, args.pairs)
        int8 = main_int8(args, threads)
    acc = table.meta["accuracy"]
    result = {"supernet": args.supernet, "threads": threads, "host": platform.node(),
              "torch": torch.__version__, "note": "CPU timings on a shared machine; ratios are interleaved A/B",
              "folding": folding, "lut": {k: v for k, v in acc.items()}, "lut_units": len(table.units),
              "lut_correction": table.correction, "macs_vs_latency": macs, "switch": switch, "slim_speed": slim_speed,
              "slim_chains": slim_chains,
              "divisor": divisor, "int8": int8,
              "goals": GOALS}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))

    print("\n(a) deployed / plain-BN latency (median ratio [q1, q3]; goal <= 1.0)")
    for r in folding:
        print(f"  {r['macs'] / 1e6:6.2f}M MACs b{r['batch']:<2}  {r['a_ms']:8.3f} ms vs {r['b_ms']:8.3f} ms   "
              f"{r['ratio_median']:.3f} [{r['ratio_q1']:.3f}, {r['ratio_q3']:.3f}]")
    print(f"\n(b) latency table: {len(table.units)} units; MAPE on {acc['eval_subnets']} held-out subnets: "
          f"sum {acc['mape_sum_pct']:.1f}%, corrected {acc['mape_corrected_pct']:.1f}% "
          f"(used: {acc['used']}; goal <= {GOALS['lut_mape_pct']}%)")
    print("\n(c) relative to the largest arch: MACs ratio -> latency ratio")
    for r in macs:
        print(f"  {r['macs_ratio']:.2f} -> {r['latency_ratio']:.2f}  ({r['ms']:.3f} ms)")
    print(f"\n(d) width switch: {switch['switch_us']:.2f} us (goal <= {GOALS['switch_us']}), "
          f"memory growth over 10,000 switches {switch['memory_growth_bytes']} bytes, "
          f"max |slimmable - dense| over the widths {switch['max_abs_diff_vs_dense']:.2e}, memory "
          f"{switch['memory_over_largest_dense']:.2f}x the largest dense network (goal <= "
          f"{GOALS['slim_memory_over_largest_dense_max']})")
    print(f"\n(d2) slimmable (fast mode) / dense deployed, per width (median ratio [q1, q3]; goal <= "
          f"{GOALS['slim_over_dense_max']})")
    for r in slim_speed:
        print(f"  width {r['width']} {r['macs'] / 1e6:6.2f}M MACs b{r['batch']:<2}  {r['a_ms']:8.3f} ms vs "
              f"{r['b_ms']:8.3f} ms   {r['ratio_median']:.3f} [{r['ratio_q1']:.3f}, {r['ratio_q3']:.3f}]")
    print(f"\n(d3) long chains, fast mode within memory_limit=2 (memory goal <= "
          f"{GOALS['slim_memory_over_largest_dense_max']}x; slimmable / dense goal <= {GOALS['slim_over_dense_max']} "
          "where a width runs derived)")
    for name, c in slim_chains.items():
        print(f"  {name}: {c['widths']} widths, memory {c['memory_over_largest_dense']:.2f}x the largest dense "
              f"network ({c['memory_over_largest_dense_unlimited']:.2f}x without a limit), derived widths "
              f"{c['derived_widths']}")
        for r in c["per_width"]:
            print(f"    width {r['width']} {'derived' if r['derived'] else 'lean   '} {r['macs'] / 1e6:6.2f}M MACs "
                  f"b{r['batch']:<2}  {r['a_ms']:8.3f} ms vs {r['b_ms']:8.3f} ms   {r['ratio_median']:.3f} "
                  f"[{r['ratio_q1']:.3f}, {r['ratio_q3']:.3f}]")
    print(f"\n(e) ms per million MACs: divisor 8 {divisor['divisor8']['ms_per_mmac_median']:.4f}, "
          f"divisor 1 {divisor['divisor1']['ms_per_mmac_median']:.4f} "
          f"({divisor['divisor1']['odd_channel_counts']} odd channel counts) -> unrounded is "
          f"{divisor['slowdown_unrounded']:.2f}x per MAC")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
