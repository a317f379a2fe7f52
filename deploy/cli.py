"""The ``ofa deploy`` and ``ofa profile`` subcommands (``ofa/cli.py`` defines their arguments and calls these)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_deploy(args: argparse.Namespace) -> int:
    from .report import int8_line
    from .run import deploy_run

    result = deploy_run(args.run, devices=args.device or None, slimmable=args.slimmable,
                        latency_table=args.latency_table, calib_batches=args.calib_batches, repeats=args.repeats,
                        threads=args.threads, progress=not args.quiet, int8=args.int8,
                        int8_tolerance_pp=args.int8_tolerance, force=args.force)
    for device, r in result.devices.items():
        m = r["top1"]["measured"]
        predicted = r["latency_predicted_ms"]
        print(f"{device}: {r['macs'] / 1e6:.2f}M MACs, {r['params'] / 1e6:.3f}M params, "
              f"latency {r['latency']['batch1']['median_ms']:.3f} ms (b1)"
              + (f" / LUT {predicted:.3f} ms" if predicted is not None else "")
              + f", test top-1 {m['top1']:.2f}% [{m['ci_low']:.2f}, {m['ci_high']:.2f}], "
              f"ONNX diff {r['onnx_check']['max_abs_diff']:.1e} -> {Path(args.run) / 'deploy' / device}")
        if r.get("int8"):
            print(f"{device} int8: {int8_line(r['int8'])}")
    if result.slimmable is not None:
        print(f"slimmable: {result.slimmable}")
    print(f"report: {result.report}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from .profile import ProfileSettings, profile

    settings = ProfileSettings.coarse() if args.coarse else ProfileSettings()
    table = profile(args.supernet, device=args.device, settings=settings, threads=args.threads, out=args.out,
                    progress=not args.quiet, int8=args.int8)
    acc = table.meta["accuracy"]
    summary = {"device": table.device, "runtime": table.runtime, "precision": table.precision,
               "units": len(table.units), "threads": table.meta["threads"],
               "correction": table.correction["kind"], "eval_subnets": acc["eval_subnets"],
               "mape_sum_pct": round(acc["mape_sum_pct"], 2), "mape_corrected_pct": round(acc["mape_corrected_pct"], 2),
               "out": str(args.out)}
    print(json.dumps(summary))
    return 0
