"""Training precision and memory layout: one `ofa train` per (mixed_precision, channels_last) variant.

accelerate allows one precision per process, so every variant trains in a process of its own, on the same config
(its phases' epochs scaled by --epochs-scale, at least 1 each). Reported per variant: exit status, wall time,
training images/s (median over epochs, from metrics.csv) and the final validation top-1 of the largest and
smallest subnets. On a GPU this checks the CUDA paths: fp16 with its gradient scaler across the sandwich's
several backward passes per step, bf16 autocast, channels_last; on a CPU, bf16 autocast.

    python benchmarks/precision.py --config tiny_cpu --epochs-scale 0.25
    python benchmarks/precision.py --config mbv3_tiny_cpu --variants no+cl bf16+cl --parallel 2

A variant is a precision (no, bf16, fp16), with "+cl" for channels_last. Writes benchmarks/results/precision.json
and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from ofa.configs import resolve as resolve_config_file

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VARIANTS = ["no", "no+cl", "bf16", "bf16+cl", "fp16", "fp16+cl"]


def variant_config(config: dict, variant: str, epochs_scale: float) -> dict:
    precision, _, layout = variant.partition("+")
    if precision not in ("no", "bf16", "fp16") or layout not in ("", "cl"):
        raise SystemExit(f"unknown variant {variant!r}: a precision (no, bf16, fp16), optionally with +cl")
    out = dict(config, mixed_precision=precision, channels_last=layout == "cl")
    out["phases"] = [dict(p, epochs=max(1, round(p["epochs"] * epochs_scale))) for p in config["phases"]]
    return out


def final_top1(metrics: Path) -> dict:
    """The last validation top-1 of each subnet kind, and the median training images/s over epochs."""
    rows = list(csv.DictReader(metrics.open())) if metrics.is_file() else []
    last = {r["subnet"]: float(r["val_top1"]) for r in rows}
    speeds = [float(r["images_per_s"]) for r in rows if r["subnet"] == "largest" and r["images_per_s"]]
    return {"largest_top1": last.get("largest"), "smallest_top1": last.get("smallest"),
            "images_per_s": statistics.median(speeds) if speeds else None}


def train_variant(config: dict, variant: str, work: Path, threads: int) -> dict:
    run = work / variant.replace("+", "_")
    path = run.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ofa.cli", "train", "--config", str(path), "--out", str(run),
                           "--quiet"], capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    row = {"variant": variant, "returncode": proc.returncode, "seconds": round(seconds, 1),
           **final_top1(run / "metrics.csv")}
    if proc.returncode != 0:
        row["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny_cpu")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every phase's epochs")
    parser.add_argument("--parallel", type=int, default=1, help="variants trained at once (CPU threads split)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "precision.json"))
    args = parser.parse_args(argv)
    config = yaml.safe_load(resolve_config_file(args.config).read_text())  # a file or a shipped name
    configs = {v: variant_config(config, v, args.epochs_scale) for v in args.variants}
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(lambda v: train_variant(configs[v], v, Path(tmp), threads), args.variants))
    import torch  # only to name the device the runs used

    result = {"config": args.config, "epochs_scale": args.epochs_scale, "parallel": args.parallel,
              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    def fmt(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    print(f"{Path(args.config).name} on {result['device']}, epochs x{args.epochs_scale}, {args.parallel} at once")
    print(f"{'variant':10s} {'rc':>3s} {'seconds':>8s} {'img/s':>8s} {'largest':>8s} {'smallest':>8s}")
    for r in rows:
        print(f"{r['variant']:10s} {r['returncode']:3d} {r['seconds']:8.1f} {fmt(r['images_per_s'], '8.1f')} "
              f"{fmt(r['largest_top1'], '8.2f')} {fmt(r['smallest_top1'], '8.2f')}  {' '.join(r.get('error', []))}")
    return result


if __name__ == "__main__":
    main()
