"""Core benchmark: the supernet's forward versus the extracted dense network, the cost model's speed, extraction.

For each supernet: forward time of the supernet running an arch versus the extracted static network of that
arch (largest arch and a mid-sized arch; batch 1 and 32), measured as interleaved A/B pairs in one process so
both see the same machine load; the ratio's median and interquartile range are reported. Also ``count_macs``
calls per second on archs never seen before, and the time of one ``extract``.

    python benchmarks/core.py                       # default supernets, CPU
    python benchmarks/core.py --supernets ofa_resnet50 --device cuda

Writes benchmarks/results/core.json and prints a table with each figure next to its goal.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import ofa

GOALS = {"ratio_largest": 1.05, "ratio_mid": 1.15, "count_macs_per_s": 5000}
DEFAULT_SUPERNETS = ["ofa_resnet_tiny", "ofa_resnet18", "ofa_resnet50", "ofa_mbv3_tiny", "ofa_vit_tiny"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_once(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def interleaved_ratio(a, b, device: torch.device, repeats: int, warmup: int = 2) -> dict:
    """Median and quartiles of time(a)/time(b) over interleaved pairs, plus each side's median in ms."""
    for _ in range(warmup):
        a()
        b()
    ta, tb, ratios = [], [], []
    for i in range(repeats):
        # Alternate which side goes first so neither always follows the other.
        if i % 2 == 0:
            x, y = _time_once(a, device), _time_once(b, device)
        else:
            y, x = _time_once(b, device), _time_once(a, device)
        ta.append(x)
        tb.append(y)
        ratios.append(x / y)
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else [min(ratios), 0, max(ratios)]
    return {"ratio": statistics.median(ratios), "ratio_q1": q[0], "ratio_q3": q[2],
            "supernet_ms": 1000 * statistics.median(ta), "static_ms": 1000 * statistics.median(tb)}


def mid_arch(net) -> ofa.Arch:
    """The sampled arch whose MACs are the median of 200 random archs."""
    archs = sorted((net.space.sample(1000 + i) for i in range(200)), key=lambda a: ofa.count_macs(net, a))
    return archs[len(archs) // 2]


def count_macs_rate(name: str, n: int = 5000) -> dict:
    net = ofa.create_supernet(name)
    archs = [net.space.sample(50_000 + i) for i in range(n)]
    distinct = len(set(archs))
    start = time.perf_counter()
    for arch in archs:
        ofa.count_macs(net, arch)
    fresh = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for arch in archs:
        ofa.count_macs(net, arch)
    cached = n / (time.perf_counter() - start)
    return {"supernet": name, "calls_per_s_new_archs": fresh, "calls_per_s_cached": cached, "distinct": distinct}


def bench_supernet(name: str, device: torch.device, batches: list[int], repeats: int) -> list[dict]:
    net = ofa.create_supernet(name).to(device).eval()
    rows = []
    for label, arch in (("largest", net.space.largest()), ("mid", mid_arch(net))):
        net.set_active(arch)
        start = time.perf_counter()
        static = net.extract(arch).to(device).eval()
        extract_s = time.perf_counter() - start
        for batch in batches:
            x = torch.randn(batch, net.in_chans, arch.resolution, arch.resolution, device=device)
            with torch.no_grad():
                result = interleaved_ratio(lambda x=x: net(x), lambda x=x, s=static: s(x), device, repeats)
            rows.append({"supernet": name, "arch": label, "batch": batch, "resolution": arch.resolution,
                         "macs": ofa.count_macs(net, arch), "extract_s": extract_s, **result})
            print(f"  {name:16s} {label:8s} b={batch:<3d} ratio {result['ratio']:.3f} "
                  f"[{result['ratio_q1']:.3f}, {result['ratio_q3']:.3f}]  "
                  f"supernet {result['supernet_ms']:.2f} ms  static {result['static_ms']:.2f} ms", flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernets", nargs="+", default=DEFAULT_SUPERNETS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--repeats", type=int, default=15, help="interleaved A/B pairs per measurement")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "core.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, {args.threads} threads, {args.repeats} interleaved repeats")
    forward = [row for name in args.supernets for row in bench_supernet(name, device, args.batches, args.repeats)]
    macs = [count_macs_rate(name) for name in args.supernets]
    summary = [{"figure": f"forward ratio supernet/static {r['supernet']} {r['arch']} b={r['batch']}",
                "value": r["ratio"], "goal": f"<= {GOALS['ratio_' + r['arch']]}",
                "met": r["ratio"] <= GOALS["ratio_" + r["arch"]]} for r in forward]
    summary += [{"figure": f"count_macs calls/s {m['supernet']}", "value": m["calls_per_s_new_archs"],
                 "goal": f">= {GOALS['count_macs_per_s']}", "met": m["calls_per_s_new_archs"] >= GOALS["count_macs_per_s"]}
                for m in macs]
    result = {"device": str(device), "threads": args.threads, "torch": torch.__version__, "forward": forward,
              "count_macs": macs, "goals": GOALS, "summary": summary}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    print(f"\n{'figure':52s} {'measured':>10s} {'goal':>10s}")
    for row in forward:
        goal = GOALS["ratio_largest"] if row["arch"] == "largest" else GOALS["ratio_mid"]
        label = f"forward ratio {row['supernet']} {row['arch']} b={row['batch']}"
        print(f"{label:52s} {row['ratio']:10.3f} {'<= ' + str(goal):>10s}")
    for row in macs:
        label = f"count_macs calls/s {row['supernet']} (new archs)"
        print(f"{label:52s} {row['calls_per_s_new_archs']:10.0f} {'>= ' + str(GOALS['count_macs_per_s']):>10s}")
    for name in args.supernets:
        extract = [r["extract_s"] for r in forward if r["supernet"] == name]
        print(f"{'extract time ' + name + ' (s, largest/mid)':52s} {'/'.join(f'{t:.3f}' for t in extract[::len(args.batches)]):>10s}")
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
