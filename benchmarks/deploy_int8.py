"""The int8 figures (f)-(h) of benchmarks/deploy.py: int8 against float32 in onnxruntime for ``ofa_resnet18``
(every quantization variant, with the CPU's int8 instruction sets), the int8 latency table's error, and a run's
devices deployed in int8. Run through ``python benchmarks/deploy.py --int8-only``."""

from __future__ import annotations

import json
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

# Beside benchmarks/deploy.py, whose name shadows the `deploy` package when this folder leads sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

import ofa  # noqa: E402
from deploy.profile import ProfileSettings, profile  # noqa: E402
from ofa.fold import fold_bn  # noqa: E402

GOALS = {"int8_over_float_resnet18_max": 0.5, "int8_lut_mape_pct": 10.0, "int8_top1_drop_pp_max": 1.0}
DEPLOY_VARIANT = "deploy (QDQ, u8 activations, per-channel 7-bit weights)"


def once_seconds(model, x) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def int8_cpu_flags() -> list[str]:
    """The int8 dot-product instruction sets this CPU reports (VNNI, AMX), or what it has instead."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split())
    except (OSError, IndexError):
        return []
    wanted = ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "avx512f", "avx2")
    return [f for f in wanted if f in flags]


def bench_int8_variants(name: str, resolution: int, threads: int, repeats: int) -> list[dict]:
    """int8 / float32 median batch-1 latency in onnxruntime of the largest and a middle subnet at ``resolution``,
    for each quantization variant; all models of one subnet are timed round-robin (the same machine load)."""
    import onnxruntime as ort

    from deploy.export import export_onnx
    from deploy.quantize import OrtModel, QuantSettings, quantize_onnx

    net = ofa.create_supernet(name).eval()
    rng = random.Random(0)
    pool = sorted((replace(net.space.sample(rng), resolution=resolution) for _ in range(200)),
                  key=lambda a: net.costs(a)[0])
    variants = {DEPLOY_VARIANT: QuantSettings(), "8-bit weights (no reduce_range)": QuantSettings(reduce_range=False),
                "qoperator": QuantSettings(quant_format="qoperator"),
                "s8 activations": QuantSettings(activation_type="int8"),
                "per-tensor weights": QuantSettings(per_channel=False)}
    rows = []
    for label, arch in (("largest", replace(net.space.largest(), resolution=resolution)),
                        ("middle", pool[len(pool) // 2])):
        static = net.extract(arch).eval()
        static.description["data_config"] = {"input_size": [net.in_chans, resolution, resolution]}
        with tempfile.TemporaryDirectory() as work:
            export_onnx(fold_bn(static), Path(work) / "float.onnx")
            feeds = [{"input": torch.randn(1, net.in_chans, resolution, resolution).numpy()} for _ in range(4)]
            paths = {"float32": Path(work) / "float.onnx"}
            for i, (v, settings) in enumerate(variants.items()):
                paths[v] = quantize_onnx(paths["float32"], Path(work) / f"q{i}.onnx", feeds, settings)

            def session(path, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
                options = ort.SessionOptions()
                options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
                options.graph_optimization_level = level
                return OrtModel(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))

            models = {v: session(p) for v, p in paths.items()}
            models["deploy's, ORT basic graph optimization"] = session(
                paths[DEPLOY_VARIANT], ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
            x = torch.randn(1, net.in_chans, resolution, resolution)
            times: dict[str, list[float]] = {v: [] for v in models}
            for m in models.values():
                for _ in range(3):
                    m(x)
            for _ in range(repeats):
                for v, m in models.items():
                    times[v].append(once_seconds(m, x) * 1e3)
            ms = {v: statistics.median(t) for v, t in times.items()}
            sizes = {v: p.stat().st_size for v, p in paths.items()}
            ops = {p: op_breakdown(paths[v], x, threads) for p, v in (("float32", "float32"), ("int8", DEPLOY_VARIANT))}
        rows.append({"subnet": label, "arch": arch.to_dict(), "macs": net.costs(arch)[0], "resolution": resolution,
                     "float32_ms": ms["float32"], "ms_per_op": ops,
                     "variants": {v: {"ms": t, "ratio": t / ms["float32"], "p10_ms": statistics.quantiles(
                         times[v], n=10)[0], "p90_ms": statistics.quantiles(times[v], n=10)[-1],
                                      "size_ratio": sizes.get(v, sizes[DEPLOY_VARIANT])
                                      / sizes["float32"]}
                                  for v, t in ms.items() if v != "float32"}})
    return rows


def op_breakdown(path: Path, x: torch.Tensor, threads: int, runs: int = 20) -> dict[str, float]:
    """Mean ms per run spent in each operator type (onnxruntime's profiler, after the graph optimizations): where
    an int8 model's time goes next to the float model's."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, {"input": x.numpy()})
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            per_op[op] = per_op.get(op, 0.0) + e["dur"] / 1e3 / runs
    return dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def bench_int8_run(run: Path, threads: int | None, repeats: int) -> dict:
    """Every device of ``run`` deployed with ``--int8`` into a copy of the run: the int8 section of each report."""
    from deploy.run import deploy_run

    with tempfile.TemporaryDirectory() as work:
        copy = Path(work) / run.name
        copy.mkdir()
        for name in ("supernet.safetensors", "supernet.json", "config.yaml"):
            shutil.copy(run / name, copy / name)
        shutil.copytree(run / "search", copy / "search")
        if (run / "latency").is_dir():
            shutil.copytree(run / "latency", copy / "latency")
        result = deploy_run(copy, int8=True, repeats=repeats, threads=threads, progress=False)
    return {d: {"macs": r.macs, **r.int8} for d, r in result.devices.items()}


def main_int8(args, threads: int) -> dict:
    flags = int8_cpu_flags()
    print(f"CPU int8 instruction sets: {', '.join(flags) or 'unknown'}; {threads} thread(s)")
    variants = bench_int8_variants("ofa_resnet18", 224, threads, args.pairs)
    table = profile(args.supernet, device=platform.node(), settings=ProfileSettings(), progress=False, int8=True)
    out = {"cpu_flags": flags, "threads": threads, "resnet18_224": variants, "lut": table.meta["accuracy"],
           "lut_units": len(table.units), "lut_correction": table.correction, "lut_supernet": args.supernet}
    if args.run:
        out["run"] = {"path": args.run, "devices": bench_int8_run(Path(args.run), threads, args.pairs)}
    print(f"\n(f) int8 / float32 latency in onnxruntime, ofa_resnet18 at 224 px, batch 1 (goal <= "
          f"{GOALS['int8_over_float_resnet18_max']} for deploy's)")
    for r in variants:
        print(f"  {r['subnet']} ({r['macs'] / 1e9:.2f} GMACs): float32 {r['float32_ms']:.2f} ms")
        for v, t in r["variants"].items():
            print(f"    {v:56s} {t['ms']:8.2f} ms  [{t['p10_ms']:.2f}, {t['p90_ms']:.2f}]  {t['ratio']:.2f}x")
        for p, ops in r["ms_per_op"].items():
            print(f"    profiled {p:8s} " + ", ".join(f"{op} {t:.2f}" for op, t in list(ops.items())[:6]) + " (ms/run)")
    acc = out["lut"]
    print(f"\n(g) int8 latency table ({args.supernet}, {len(table.units)} units): MAPE on {acc['eval_subnets']} "
          f"held-out subnets: sum {acc['mape_sum_pct']:.1f}%, corrected {acc['mape_corrected_pct']:.1f}% (used: "
          f"{acc['used']}; goal <= {GOALS['int8_lut_mape_pct']}%)")
    if args.run:
        print(f"\n(h) {args.run} deployed in int8: drop = float32 - int8 test top-1 (goal within "
              f"{GOALS['int8_top1_drop_pp_max']} pp)")
        for d, q in out["run"]["devices"].items():
            t, lat = q["top1"], q["latency"]
            print(f"  {d:10s} {q['macs'] / 1e6:6.2f}M MACs  top-1 {t['float32']['top1']:.2f} -> {t['int8']['top1']:.2f}"
                  f" (drop {t['drop_pp']:+.2f} pp [{t['drop_ci95_pp'][0]:+.2f}, {t['drop_ci95_pp'][1]:+.2f}])  "
                  f"latency {lat['float32']['median_ms']:.3f} -> {lat['int8']['median_ms']:.3f} ms "
                  f"({lat['ratio']:.2f}x)  size {q['size_bytes']['ratio']:.2f}x")
    return out
