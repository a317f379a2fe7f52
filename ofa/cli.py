"""The ``ofa`` command line: one subcommand per pipeline step.

Subcommands import ``train``, ``search`` and ``deploy`` lazily, so ``ofa --help`` is instant and ``import ofa``
stays light. A user mistake (an :class:`ofa.OFAError`) ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from . import __version__
from .errors import OFAError

EPILOG = """\
the pipeline:
  ofa train  --config configs/tiny_cpu.yaml --out runs/tiny    train one supernet (all phases)
  ofa search runs/tiny --budget macs=5M                        best subnet per device budget
  ofa deploy runs/tiny                                         dense, exported subnets + report

start here:
  ofa info                      registered supernets and their search spaces
  ofa info ofa_resnet_tiny      one supernet in detail
"""


def _own_module(name: str):
    """Import one of this distribution's packages, refusing a same-named module of the user's (e.g. ./train.py)."""
    module = importlib.import_module(name)
    ours = Path(__file__).resolve().parent.parent
    where = Path(getattr(module, "__file__", "") or "").resolve()
    if ours not in where.parents:
        raise OFAError(f"the module {name!r} was imported from {where}, not from ofa-supernet ({ours}); "
                       f"a file or folder named {name!r} in the working directory or on PYTHONPATH shadows it: "
                       "rename it or run ofa from another directory")
    return module


def foreign_ofa_distributions() -> list[str]:
    """Other installed distributions that also provide a top-level ``ofa`` module (e.g. once-for-all)."""
    from importlib.metadata import packages_distributions

    return sorted(d for d in packages_distributions().get("ofa", []) if d.lower() != "ofa-supernet")


def cmd_info(args: argparse.Namespace) -> int:
    from .registry import list_supernets, supernet_entry

    names = [args.name] if args.name else list_supernets()
    rows = []
    for name in names:
        cls, config = supernet_entry(name)
        plan = cls.make_plan(**config)
        space = plan.space
        large, small = plan.costs(space.largest()), plan.costs(space.smallest())
        rows.append({"name": name, "family": cls.family, "in_chans": plan.in_chans,
                     "num_classes": plan.num_classes, "space": space.to_dict(), "archs": space.size(),
                     "largest": {"macs": large[0], "params": large[1]},
                     "smallest": {"macs": small[0], "params": small[1]}})
        if not args.json:
            print(f"{name}  ({cls.family}; {plan.in_chans} input channels, {plan.num_classes} classes by default)")
            print(f"  largest  {large[0] / 1e6:10.2f}M MACs {large[1] / 1e6:8.3f}M params   "
                  f"smallest {small[0] / 1e6:8.2f}M MACs {small[1] / 1e6:7.3f}M params")
            for line in space.describe().splitlines():
                print("  " + line)
            print()
    if args.json:
        print(json.dumps({"ofa_version": __version__, "supernets": rows}, indent=2))
    foreign = foreign_ofa_distributions()
    if foreign:
        print(f"warning: {', '.join(foreign)} also installs a module named 'ofa' and can shadow this one; "
              f"uninstall it (pip uninstall {' '.join(foreign)})", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ofa", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Train one elastic supernet once, then hand every device the subnet that fits its budget.")
    parser.add_argument("--version", action="version", version=f"ofa-supernet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = sub.add_parser("info", help="list the registered supernets and their search spaces",
                          description="List the registered supernets, their search spaces and the cost range "
                                      "(MACs, parameters) from the smallest to the largest subnet.")
    info.add_argument("name", nargs="?", help="show only this supernet")
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")
    info.set_defaults(func=cmd_info)

    train = sub.add_parser("train", help="train one supernet through every phase of a config")
    try:  # train/cli.py imports only argparse at module level
        _own_module("train.cli").add_arguments(train)
    except (ImportError, OFAError):  # shadowed by a user's train.py: report it when the subcommand runs
        train.add_argument("rest", nargs=argparse.REMAINDER)
        train.set_defaults(func=lambda a: (_own_module("train"), _own_module("train.cli")) and 2)

    search = sub.add_parser("search", help="the best subnet per device budget (accuracy table, predictor, NSGA-II)")
    try:  # search/cli.py imports only argparse at module level, so `ofa --help` stays instant
        _own_module("search.cli").add_arguments(search)
    except (ImportError, OFAError):  # shadowed by a user's search.py: report it when the subcommand runs
        search.add_argument("rest", nargs=argparse.REMAINDER)
        search.set_defaults(func=lambda a: (_own_module("search"), _own_module("search.cli")) and 2)

    deploy = sub.add_parser("deploy", help="dense, exported, measured subnets for the devices the search chose",
                            description="Extract each selected subnet with calibrated BN, write RUN/deploy/DEVICE/ "
                                        "(safetensors + JSON, ONNX checked with onnxruntime, torch.export, "
                                        "report.json) and RUN/report.md.")
    deploy.add_argument("run", help="run directory (with search/selected.json)")
    deploy.add_argument("--device", action="append", help="deploy only this device (repeatable)")
    deploy.add_argument("--slimmable", action="store_true", help="also write one runtime-slimmable network")
    deploy.add_argument("--latency-table", help="latency table to predict with (default: RUN/latency/DEVICE.json)")
    deploy.add_argument("--calib-batches", type=int, default=32, help="BN calibration batches of 64 images")
    deploy.add_argument("--repeats", type=int, default=30, help="timed forward passes per latency")
    deploy.add_argument("--threads", type=int, help="torch threads while timing (default: torch's)")
    deploy.add_argument("--quiet", action="store_true", help="no progress bar")
    deploy.set_defaults(func=lambda a: _own_module("deploy.cli").cmd_deploy(a))

    profile = sub.add_parser("profile", help="measure a latency table on this device",
                             description="Time every distinct layer unit of a supernet's space on this device and "
                                         "write a latency table (report its accuracy on random subnets).")
    profile.add_argument("--supernet", required=True, help="registered name, or a saved supernet / run directory")
    profile.add_argument("--out", required=True, help="where to write the table (JSON)")
    profile.add_argument("--device", help="device name recorded in the table (default: host name)")
    profile.add_argument("--coarse", action="store_true", help="quick, noisier table (tests, CI)")
    profile.add_argument("--threads", type=int, help="torch threads while timing (default: torch's)")
    profile.add_argument("--quiet", action="store_true", help="no progress bar")
    profile.set_defaults(func=lambda a: _own_module("deploy.cli").cmd_profile(a))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except OFAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
