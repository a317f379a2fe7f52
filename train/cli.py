"""`ofa train`: arguments here (argparse only at import, so `ofa --help` stays instant), the work in trainer.py."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Train one supernet through every phase of a config (progressive shrinking with sandwich "
                          "sampling and in-place distillation) into a run directory: config.yaml, "
                          "supernet.safetensors + supernet.json, metrics.csv, checkpoints/. Multi-process: "
                          "torchrun --nproc_per_node N -m ofa.cli train ... or accelerate launch -m ofa.cli train ...")
    parser.add_argument("--config", help="YAML config (e.g. configs/tiny_cpu.yaml)")
    parser.add_argument("--out", help="run directory to create")
    parser.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint (its own config)")
    parser.add_argument("--data", help="override the dataset spec: mnist5k | imagefolder:PATH | cifar10:PATH | "
                                       "cifar100:PATH | a timm dataset name")
    parser.add_argument("--data-root", help="root folder for a timm dataset name")
    parser.add_argument("--download", action="store_true", help="allow torchvision/timm to download the dataset")
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], help="override the config's setting")
    parser.add_argument("--cpu", action="store_true", help="train on CPU even when a GPU exists")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("--threads", type=int, help="torch threads per process (default: the config's `threads`, "
                                                    "else usable cores / processes on this machine)")
    parser.add_argument("--log-with", choices=["tensorboard"],
                        help="also log to TensorBoard (RUN/tensorboard/; needs pip install 'ofa-supernet[tensorboard]')")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from .config import read_config
    from .trainer import train

    overrides = {"mixed_precision": args.mixed_precision, "seed": args.seed, "cpu": True if args.cpu else None,
                 "log_with": args.log_with, "threads": args.threads}
    config = None
    if args.resume is None:
        from ofa.errors import OFAError

        if not args.config or not args.out:
            raise OFAError("give --config CONFIG and --out RUN, or --resume RUN")
        config = read_config(args.config)
        if args.data or args.data_root or args.download:
            data = config.get("data") or {}
            data = {"spec": data} if isinstance(data, str) else dict(data)
            if args.data:
                data["spec"] = args.data
            if args.data_root:
                data["root"] = args.data_root
            if args.download:
                data["download"] = True
            config["data"] = data
    result = train(config, args.out, resume=args.resume, overrides=overrides, progress=not args.quiet)
    if result.is_main_process:
        print(f"wrote {result.run_dir}: supernet.safetensors ({result.global_step} steps), metrics.csv, config.yaml")
        last = [row for row in result.metrics if row["step"] == result.metrics[-1]["step"]] if result.metrics else []
        if last:
            print("final validation top-1: " + ", ".join(
                f"{row['subnet']} {float(row['val_top1']):.1f}% [{float(row['ci_low']):.1f}, "
                f"{float(row['ci_high']):.1f}]" for row in last))
        if result.skipped_images:
            print(f"skipped {len(result.skipped_images)} unreadable image(s): "
                  + ", ".join(result.skipped_images[:5]) + (" ..." if len(result.skipped_images) > 5 else ""))
    return 0
