"""``RUN/report.md``: one table over every deployed device, from the devices' ``report.json`` files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ofa.io import atomic_write
from ofa.rundir import DeployReport, RunDir, SlimmableReport
from ofa.space import OPTIONAL_PER_BLOCK


def _budget(budget: dict[str, Any] | None) -> str:
    if not budget:
        return "-"
    parts = []
    if budget.get("macs"):
        parts.append(f"macs={budget['macs'] / 1e6:.3g}M")
    if budget.get("params"):
        parts.append(f"params={budget['params'] / 1e6:.3g}M")
    if budget.get("latency_ms"):
        parts.append(f"latency={budget['latency_ms']:.3g}ms@{budget.get('latency_device') or '?'}")
    return ", ".join(parts) or "-"


def _per_block(rows: list[list[float]]) -> str:
    return "|".join(",".join(f"{v:g}" for v in row) for row in rows)


def arch_text(arch: dict[str, Any]) -> str:
    """An arch (``Arch.to_dict()``) on one line: resolution, depths, widths, expands, then the per-block
    dimensions only some families have (kernels ``k``, heads ``h``) and the stem."""
    widths = ",".join(f"{w:g}" for w in arch["widths"])
    optional = "".join(f" {name[0]}{_per_block(arch[name])}" for name in OPTIONAL_PER_BLOCK
                       if arch.get(name) is not None)
    stem = f" stem {arch['stem']:g}" if arch.get("stem") is not None else ""
    return (f"r{arch['resolution']} d{''.join(str(d) for d in arch['depths'])} w{widths} "
            f"e{_per_block(arch['expands'])}{optional}{stem}")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def int8_line(q: dict[str, Any]) -> str:
    """One line comparing a device's int8 model with its float model (the printed tables use it)."""
    t, lat, size = q["top1"], q["latency"], q["size_bytes"]
    low, high = t["drop_ci95_pp"]
    return (f"top-1 {t['int8']['top1']:.2f}% int8 vs {t['float32']['top1']:.2f}% float32 (drop {t['drop_pp']:+.2f} "
            f"pp, 95% CI [{low:+.2f}, {high:+.2f}]"
            + (f", FLAGGED: above the {t['tolerance_pp']:g} pp tolerance" if t["flagged"] else "")
            + f"); latency {lat['int8']['median_ms']:.3f} vs {lat['float32']['median_ms']:.3f} ms "
            f"({lat['ratio']:.2f}x, {lat['runtime']}, {lat['threads']} thread(s)); size {size['int8'] / 1e3:.0f} vs "
            f"{size['float32'] / 1e3:.0f} kB ({size['ratio']:.2f}x)")


def _int8_table(reports: dict[str, DeployReport], names: list[str]) -> list[str]:
    rows = [n for n in names if reports[n].int8]
    if not rows:
        return []
    lines = ["## Int8 models", "",
             "| device | top-1 float32 | top-1 int8 | drop (pp) [95% CI] | flagged | latency float32 (ms) median [p10, p90] "
             "| latency int8 (ms) median [p10, p90] | int8 / float32 | size float32 / int8 (kB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in rows:
        q = reports[name].int8
        t, lat, size = q["top1"], q["latency"], q["size_bytes"]
        f, i = lat["float32"], lat["int8"]
        low, high = t["drop_ci95_pp"]
        lines.append(
            f"| {name} | {t['float32']['top1']:.2f} | {t['int8']['top1']:.2f} | {t['drop_pp']:+.2f} "
            f"[{low:+.2f}, {high:+.2f}] | {'yes' if t['flagged'] else 'no'} "
            f"| {f['median_ms']:.3f} [{f['p10_ms']:.3f}, {f['p90_ms']:.3f}] "
            f"| {i['median_ms']:.3f} [{i['p10_ms']:.3f}, {i['p90_ms']:.3f}] | {lat['ratio']:.2f}x "
            f"| {size['float32'] / 1e3:.0f} / {size['int8'] / 1e3:.0f} ({size['ratio']:.2f}x) |")
    q = reports[rows[0]].int8
    lines += ["", f"`deploy/DEVICE/model.int8.onnx`: static post-training quantization "
              f"({q['quantization']['quant_format'].upper()}, per-channel {q['quantization']['weight_type']} weights"
              f"{' (7 bits used)' if q['quantization']['reduce_range'] else ''}, "
              f"{q['quantization']['activation_type']} activations) calibrated on the calib split. Both models run in "
              f"{q['latency']['runtime']} at batch 1, interleaved; top-1 on the test split, the drop's interval paired "
              f"over the same images; a drop whose interval lies above {q['top1']['tolerance_pp']:g} pp is flagged. "
              "An int8 device's LUT prediction and latency budget refer to the int8 model's median.", ""]
    return lines


def write_report(run: str | Path, order: list[str] | None = None) -> Path:
    """Write ``RUN/report.md`` from ``RUN/deploy/*/report.json`` (devices in ``order`` first)."""
    paths = RunDir(run)
    run = paths.path
    reports = {d: DeployReport.read(paths.device_report(d), hint="deploy the device again")
               for d in paths.deployed_devices()}
    names = [d for d in (order or []) if d in reports] + sorted(d for d in reports if d not in (order or []))
    lines = [f"# Deployment report: {run.name}", "",
             "| device | budget | arch | MACs | params | latency b1 (ms) median [p10, p90] | latency b32 (ms) | LUT predicted (ms) "
             "| predicted top-1 | measured top-1 [95% CI] | ONNX max diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    host = threads = None
    for name in names:
        r = reports[name]
        lat = r.latency
        host, threads = lat.get("host"), r.batch1["threads"]
        predicted = (r.top1.get("predicted") or {})
        pred = f"{predicted['value']:.2f} ({predicted['metric']})" if predicted.get("value") is not None else "-"
        m = r.measured
        lines.append(
            f"| {name} | {_budget(r.budget)} | `{arch_text(r.arch)}` | {r.macs / 1e6:.2f}M "
            f"| {r.params / 1e6:.3f}M | {r.batch1['median_ms']:.3f} [{r.batch1['p10_ms']:.3f}, {r.batch1['p90_ms']:.3f}] "
            f"| {lat['batch32']['median_ms']:.2f} "
            f"| {_num(r.latency_predicted_ms, '.3f')} | {pred} "
            f"| {m['top1']:.2f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}] (n={m['n']}) "
            f"| {r.onnx_check['max_abs_diff']:.1e} |")
    lines += ["", f"Latency: median over repeated forward passes of the deployed PyTorch network (BN folded, channels-last) on `{host}` with {threads} "
              "thread(s), after warm-up (settings in each `deploy/DEVICE/report.json`). Measured top-1 is on the "
              "test split; predicted top-1 is the search's estimate. The latency table predicts the same median latency, at its "
              "own thread count.", ""]
    lines += _int8_table(reports, names)
    if paths.slimmable_report.is_file():
        s = SlimmableReport.read(paths.slimmable_report, hint="deploy with --slimmable again")
        widths = ", ".join(f"{n} {t['batch1']['slimmable_ms']:.3f} ms ({t['batch1']['ratio']:.2f}x dense, "
                           f"{t['batch32']['ratio']:.2f}x at batch 32)"
                           for n, t in zip(s.widths, s.timing["per_width"]))
        memory = s.memory_bytes["total"] / s.largest_dense_bytes
        dropped = s.memory_bytes_after_drop_stored / s.largest_dense_bytes
        derived = s.widths if s.derived_widths is None else s.derived_widths  # older reports: all of them
        lines += [f"Runtime-slimmable network: `deploy/slimmable/` ({s.mode} mode; widths: {widths}, each timed "
                  f"interleaved with its dense deployed network; memory {memory:.2f}x the largest dense network, "
                  f"{dropped:.2f}x after `drop_stored()`; at dense speed: {', '.join(derived)}, "
                  "the others on views; "
                  f"max difference from the dense networks {max(s.max_abs_diff_vs_dense):.1e}).", ""]
    if paths.pareto_png.is_file():
        lines += ["![Pareto front of the search](search/pareto.png)", ""]
    path = paths.report
    text = "\n".join(lines)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path
