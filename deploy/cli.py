"""The ``ofa deploy`` and ``ofa profile`` subcommands: their arguments (argparse only at import, so ``ofa --help``
stays instant) and the calls into deploy/run.py and deploy/profile.py."""

from __future__ import annotations

import argparse
import json

from ofa.cli.format import THREADS_HELP
from ofa.rundir import RunDir


def add_arguments(deploy: argparse.ArgumentParser) -> None:
    deploy.description = (
        "Extract each selected subnet with calibrated BN, write RUN/deploy/DEVICE/ (safetensors + JSON, ONNX checked "
        "with onnxruntime, torch.export, report.json) and RUN/report.md. Devices whose budget says precision: int8 "
        "(or all, with --int8) also get model.int8.onnx: static post-training quantization (onnxruntime, QDQ, "
        "per-channel int8 weights) calibrated on the calib split, its test top-1 and onnxruntime latency reported "
        "next to the float model's.")
    deploy.add_argument("run", help="run directory (with search/selected.json)")
    deploy.add_argument("--device", action="append", help="deploy only this device (repeatable)")
    deploy.add_argument("--slimmable", action="store_true", help="also write one runtime-slimmable network")
    deploy.add_argument("--latency-table", help="latency table to predict with (default: RUN/latency/DEVICE.json)")
    deploy.add_argument("--calib-batches", type=int, default=32, help="BN calibration batches of 64 images")
    deploy.add_argument("--repeats", type=int, default=30, help="timed forward passes per latency")
    deploy.add_argument("--threads", type=int, help=THREADS_HELP + "; also while timing")
    deploy.add_argument("--int8", action="store_true",
                        help="also quantize every device to int8 (model.int8.onnx; needs the export extra) and "
                             "report int8 vs float32 test top-1, onnxruntime latency and size")
    deploy.add_argument("--int8-tolerance", type=float, default=1.0, metavar="PP",
                        help="flag an int8 top-1 drop whose 95%% interval lies above PP points (default 1.0)")
    deploy.add_argument("--force", action="store_true",
                        help="deploy subnets whose test top-1 is at chance level (refused by default)")
    deploy.add_argument("--quiet", action="store_true", help="no progress bar")
    deploy.set_defaults(func=cmd_deploy)


def add_profile_arguments(profile: argparse.ArgumentParser) -> None:
    profile.description = ("Time every distinct layer unit of a supernet's space on this device and write a latency "
                           "table (report its accuracy on random subnets).")
    profile.add_argument("--supernet", required=True, help="registered name, or a saved supernet / run directory")
    profile.add_argument("--out", required=True, help="where to write the table (JSON)")
    profile.add_argument("--device", help="device name recorded in the table (default: host name)")
    profile.add_argument("--coarse", action="store_true", help="quick, noisier table (tests, CI)")
    profile.add_argument("--threads", type=int, help=THREADS_HELP + "; the table records it: time with the "
                                                     "thread count you deploy with")
    profile.add_argument("--int8", action="store_true",
                         help="time the int8 form `ofa deploy --int8` ships (quantized ONNX in onnxruntime): the "
                              "table for devices with precision: int8 (save it as RUN/latency/DEVICE.int8.json)")
    profile.add_argument("--quiet", action="store_true", help="no progress bar")
    profile.set_defaults(func=cmd_profile)


def cmd_deploy(args: argparse.Namespace) -> int:
    from .config import DeployConfig
    from .report import int8_line
    from .run import deploy

    result = deploy(DeployConfig(args.run, devices=args.device or None, slimmable=args.slimmable,
                                 latency_table=args.latency_table, calib_batches=args.calib_batches,
                                 repeats=args.repeats, threads=args.threads, progress=not args.quiet,
                                 int8=args.int8, int8_tolerance_pp=args.int8_tolerance, force=args.force))
    for device, r in result.devices.items():
        m = r.measured
        predicted = r.latency_predicted_ms
        print(f"{device}: {r.macs / 1e6:.2f}M MACs, {r.params / 1e6:.3f}M params, "
              f"latency {r.batch1['median_ms']:.3f} ms (b1)"
              + (f" / LUT {predicted:.3f} ms" if predicted is not None else "")
              + f", test top-1 {m['top1']:.2f}% [{m['ci_low']:.2f}, {m['ci_high']:.2f}], "
              f"ONNX diff {r.onnx_check['max_abs_diff']:.1e} -> {RunDir(args.run).device_dir(device)}")
        if r.int8:
            print(f"{device} int8: {int8_line(r.int8)}")
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
