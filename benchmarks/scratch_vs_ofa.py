"""Once-for-all versus training from scratch, on the tiny config.

Trains the tiny supernet through its whole schedule (or takes an existing run with ``--run``), then measures the
largest, the smallest and two middle subnets taken from it (BN-calibrated on the calib split, no retraining) on
the test split; and trains each of those four architectures alone from scratch, with the same data, augmentation,
optimizer, learning rate and schedule, for as many epochs as the whole schedule has (a one-phase config whose
sub-space is that one arch, so the sandwich reduces to plain cross-entropy training). Goal: the supernet's
subnets at least match scratch on average.

    python benchmarks/scratch_vs_ofa.py                              # the full tiny schedule (minutes on a free CPU)
    python benchmarks/scratch_vs_ofa.py --steps-per-epoch 8          # a quick, smaller-budget comparison
    python benchmarks/scratch_vs_ofa.py --seeds 2                    # both sides twice: less seed noise

Writes benchmarks/results/scratch_vs_ofa.json and prints a table (top-1 with 95% Wilson intervals) and the mean gap
with its 95% interval, paired over the test images both sides answer.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

import ofa

ROOT = Path(__file__).resolve().parent.parent


def import_train_module(name: str):
    """Import ``train.<name>`` of the project (a benchmarks/train.py beside this script would shadow it)."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    return importlib.import_module(f"train.{name}")


def arch_at(space, q: float):
    """The arch taking, in every dimension, the choice at quantile ``q`` (0 = smallest, 1 = largest)."""
    return space.uniform(lambda choices: sorted(choices)[round(q * (len(choices) - 1))])


def pinned_phase(arch, name: str, epochs: int, lr: float, warmup: int) -> dict:
    """A phase whose sub-space is exactly ``arch`` (uniform genes per stage, as arch_at builds)."""
    phase = {"name": name, "epochs": epochs, "lr": lr, "warmup_epochs": warmup,
             "resolutions": [arch.resolution], "depths": [[d] for d in arch.depths],
             "widths": [[w] for w in arch.widths], "expands": [[e[0]] for e in arch.expands]}
    if arch.stem is not None:
        phase["stem"] = [arch.stem]
    if arch.kernels is not None:
        phase["kernels"] = [[k[0]] for k in arch.kernels]
    return phase


@torch.no_grad()
def measure(net, arch, data, test_limit):
    """Test metrics of ``arch`` after BN calibration, and which test images it gets right (in a fixed order)."""
    calib = data.eval_loader("calib", arch.resolution, batch_size=250)
    test = data.eval_loader("test", arch.resolution, batch_size=250, limit=test_limit)
    with net.active(arch), ofa.calibrate_bn(net, calib):
        net.eval()
        logits, labels = (torch.cat(t) for t in zip(*[(net(x), y) for x, y in test]))
    # evaluate() over the logits themselves: its loss, top-1 and interval, without a second pass of the network
    return ofa.evaluate(torch.nn.Identity(), [(logits, labels)]), logits.argmax(1) == labels


def paired_gap(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float, float]:
    """Mean top-1 gap (supernet minus alone, pp) over (supernet hits, alone hits) pairs, with its 95% interval.

    Both sides answer the same test images, so the gap is averaged per image over every subnet and seed and the
    interval is the paired normal one over images: it holds the test-sampling noise, not a new seed's noise.
    """
    diff = 100 * torch.stack([o.double() - s.double() for o, s in pairs]).mean(0)
    mean, half = diff.mean().item(), 1.96 * diff.std().item() / math.sqrt(diff.numel())
    return mean, mean - half, mean + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny_cpu")
    parser.add_argument("--run", help="an existing run of that config (skip training the supernet)")
    parser.add_argument("--steps-per-epoch", type=int, help="cap steps per epoch (a smaller budget for both)")
    parser.add_argument("--batch", type=int, help="override the config's batch size")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train both sides with this many seeds (config seed, +1, ...) and average")
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--eval-images", type=int, help="cap the per-epoch validation/calibration images")
    parser.add_argument("--workdir", help="where runs go (default: a temporary folder)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "scratch_vs_ofa.json"))
    args = parser.parse_args()
    trainer = import_train_module("trainer")
    config_mod = import_train_module("config")
    data_mod = import_train_module("data")

    config = config_mod.read_config(args.config)
    if args.steps_per_epoch:
        config["max_steps_per_epoch"] = args.steps_per_epoch
    if args.batch:
        config["batch_size"] = args.batch
    if args.eval_images:
        config.setdefault("eval", {}).update(calib_images=args.eval_images, val_images=args.eval_images)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="scratch_vs_ofa_"))
    seeds = [int(config.get("seed", 0)) + i for i in range(args.seeds)]
    if args.run and len(seeds) > 1:
        parser.error("--run takes one existing run: use it without --seeds")
    total_epochs = sum(p["epochs"] for p in config["phases"])
    first = config["phases"][0]
    rows, ofa_seconds, hit_pairs = {}, [], []
    for seed in seeds:  # the data split stays (data.seed): a seed changes init, batch order, augmentation, subnets
        seeded = {**config, "seed": seed}  # train() deep-copies a dict config itself
        t0 = time.perf_counter()
        if args.run:
            run = Path(args.run)
        else:
            run = work / f"ofa_seed{seed}"
            trainer.train(seeded, run, progress=True)
        ofa_seconds.append(round(time.perf_counter() - t0, 1))
        net = ofa.load(run / "supernet.safetensors")
        data = data_mod.load_run_data(run)
        space = net.space
        picks = [("largest", space.largest()), ("middle_high", arch_at(space, 2 / 3)),
                 ("middle_low", arch_at(space, 1 / 3)), ("smallest", space.smallest())]
        for label, arch in picks:
            from_ofa, ofa_hits = measure(net, arch, data, args.test_limit)
            scratch_config = {**seeded, "kd_ratio": 0.0, "num_random": 0,
                              "phases": [pinned_phase(arch, "scratch", total_epochs, first["lr"],
                                                      first.get("warmup_epochs", 0))]}
            t = time.perf_counter()
            result = trainer.train(scratch_config, work / f"scratch_{label}_seed{seed}", progress=True)
            scratch_seconds = time.perf_counter() - t
            from_scratch, scratch_hits = measure(ofa.load(result.supernet_path), arch, data, args.test_limit)
            hit_pairs.append((ofa_hits, scratch_hits))
            if label not in rows:  # the same arch for every seed
                macs, params = net.costs(arch)
                rows[label] = {"subnet": label, "arch": arch.to_dict(), "macs": macs, "params": params, "seeds": []}
            rows[label]["seeds"].append({"seed": seed, "ofa": from_ofa.to_dict(), "scratch": from_scratch.to_dict(),
                                        "scratch_train_s": round(scratch_seconds, 1)})
            print(f"seed {seed} {label}: ofa {from_ofa}  scratch {from_scratch}", flush=True)
    rows = list(rows.values())
    for r in rows:  # mean over seeds; the interval is one test evaluation's (the seeds share the test images)
        for side in ("ofa", "scratch"):
            total = r["seeds"][0][side]["total"]
            correct = sum(s[side]["correct"] for s in r["seeds"]) / len(r["seeds"])
            low, high = ofa.wilson_interval(round(correct), total)
            r[side] = {"top1": 100.0 * correct / total, "total": total, "ci_low": low, "ci_high": high}
    mean_ofa = sum(r["ofa"]["top1"] for r in rows) / len(rows)
    mean_scratch = sum(r["scratch"]["top1"] for r in rows) / len(rows)
    gap, gap_low, gap_high = paired_gap(hit_pairs)
    result = {"config": args.config, "epochs": total_epochs, "steps_per_epoch_cap": args.steps_per_epoch,
              "batch_size": config.get("batch_size"), "seeds": seeds, "ofa_train_s": ofa_seconds, "rows": rows,
              "mean_top1_ofa": mean_ofa, "mean_top1_scratch": mean_scratch,
              "gap_pp": gap, "gap_ci_low": gap_low, "gap_ci_high": gap_high,
              "goal": "mean_top1_ofa >= mean_top1_scratch", "met": mean_ofa >= mean_scratch,
              "split": "test", "note": "top-1: mean over seeds; CPU timings depend on machine load"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\n{'subnet':<12}{'MACs':>10}{'OFA top-1 [95% CI]':>28}{'scratch top-1 [95% CI]':>28}")
    for r in rows:
        o, s = r["ofa"], r["scratch"]
        print(f"{r['subnet']:<12}{r['macs'] / 1e6:>9.2f}M"
              f"{o['top1']:>10.2f} [{o['ci_low']:.1f}, {o['ci_high']:.1f}]".rjust(28)
              + f"{s['top1']:>10.2f} [{s['ci_low']:.1f}, {s['ci_high']:.1f}]".rjust(28))
    print(f"{'mean':<12}{'':>10}{mean_ofa:>28.2f}{mean_scratch:>28.2f}   goal: OFA >= scratch "
          f"({'met' if result['met'] else 'not met'})")
    print(f"{'gap':<12}{'':>10}{gap:>+28.2f} pp, 95% CI [{gap_low:+.2f}, {gap_high:+.2f}] (paired over "
          f"{hit_pairs[0][0].numel()} test images, {len(seeds)} seed(s))")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
