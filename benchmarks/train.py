"""Training benchmark: the sandwich step versus the same subnets trained as plain static networks.

For a supernet and batch size, each repetition samples one sandwich (largest, smallest, N random subnets, as
training does), times ``sandwich_backward`` on the supernet (set_active, resize, forward, loss, backward of
every subnet) and, interleaved in the same process so both see the same machine load, the sum of the same
subnets' extracted static networks' forward + backward with the same losses. The goal: overhead ratio <= 1.15.
Also training throughput (images/s through one whole step, optimizer included).

    python benchmarks/train.py                                   # ofa_resnet_tiny, batch 64, CPU
    python benchmarks/train.py --supernet ofa_resnet50 --batch 32 --device cuda

Writes benchmarks/results/train.json and prints a table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import ofa

GOAL_RATIO = 1.15


def import_train_module(name: str):
    """Import ``train.<name>`` of the project: this script is itself called train.py, and Python puts its folder
    first on sys.path, where it would shadow the ``train`` package."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    return importlib.import_module(f"train.{name}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def static_sandwich(statics, archs, x, y) -> None:
    """The same work as a sandwich step, on plain static networks (one per subnet)."""
    sw = import_train_module("sandwich")
    target = None
    for i, (net, arch) in enumerate(zip(statics, archs)):
        logits = net(sw.resize(x, arch.resolution))
        if i == 0:
            loss = F.cross_entropy(logits, y, label_smoothing=0.1)
            target = logits.detach()
        else:
            loss = sw.soft_kl(logits, target)
        loss.backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", default="ofa_resnet_tiny")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--num-random", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    args = parser.parse_args()
    sw = import_train_module("sandwich")
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = ofa.create_supernet(args.supernet).to(device).train()
    res = max(net.space.resolutions)
    x = torch.randn(args.batch, net.in_chans, res, res, device=device)
    y = torch.randint(0, net.num_classes, (args.batch,), device=device)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)

    ratios, sandwich_times, static_times, step_times = [], [], [], []
    for rep in range(args.repeats + 2):  # the first two warm up
        archs = sw.sample_subnets(net.space, seed=0, global_step=rep, num_random=args.num_random)
        statics = [net.extract(a).to(device).train() for a in archs]
        _sync(device)
        t = time.perf_counter()
        sw.sandwich_backward(net, net, archs, x, y, label_smoothing=0.1)
        _sync(device)
        t_sandwich = time.perf_counter() - t
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        t_step = time.perf_counter() - t
        t = time.perf_counter()
        static_sandwich(statics, archs, x, y)
        _sync(device)
        t_static = time.perf_counter() - t
        if rep >= 2:
            ratios.append(t_sandwich / t_static)
            sandwich_times.append(t_sandwich)
            static_times.append(t_static)
            step_times.append(t_step)

    q = statistics.quantiles(ratios, n=4)
    result = {
        "supernet": args.supernet, "batch": args.batch, "subnets_per_step": 2 + args.num_random,
        "device": str(device), "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
        "sandwich_ms_median": 1000 * statistics.median(sandwich_times),
        "static_sum_ms_median": 1000 * statistics.median(static_times),
        "ratio_median": statistics.median(ratios), "ratio_q1": q[0], "ratio_q3": q[2], "goal_ratio": GOAL_RATIO,
        "images_per_s": args.batch / statistics.median(step_times),
        "note": "interleaved A/B pairs in one process; CPU numbers depend on machine load",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{'figure':<34}{'value':>14}  goal")
    print(f"{'sandwich step (ms, median)':<34}{result['sandwich_ms_median']:>14.1f}")
    print(f"{'static fwd+bwd sum (ms, median)':<34}{result['static_sum_ms_median']:>14.1f}")
    ratio = f"{result['ratio_median']:.3f} [{q[0]:.3f}, {q[2]:.3f}]"
    print(f"{'ratio (median [IQR])':<34}{ratio:>14}  <= {GOAL_RATIO}")
    print(f"{'training images/s':<34}{result['images_per_s']:>14.1f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
