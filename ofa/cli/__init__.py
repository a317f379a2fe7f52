"""The ``ofa`` command line: one subcommand per pipeline step, argument parsing only.

Each stage defines its own arguments and work (``train/cli.py``, ``search/cli.py``, ``deploy/cli.py``; the demo
in ``ofa/cli/demo.py``); this package imports them lazily, so ``ofa --help`` is instant and ``import ofa`` stays
light. A user mistake (an :class:`ofa.OFAError`) ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import OFAError
from . import demo, info
from .format import HelpFormatter
from .modules import own_module

EPILOG = """\
the pipeline:
  ofa train  --config tiny_cpu --out runs/tiny    train one supernet (all phases; tiny_cpu is a shipped config)
  ofa search runs/tiny --budget macs=5M           best subnet per device budget
  ofa deploy runs/tiny                            dense, exported subnets + report

start here:
  ofa demo --quick              the whole pipeline on the embedded digits, in minutes
  ofa info                      registered supernets and their search spaces
  ofa info ofa_resnet_tiny      one supernet in detail
"""

# (command, the module defining its arguments, the function there that adds them, one line of help)
STAGES = (
    ("train", "train.cli", "add_arguments", "train one supernet through every phase of a config"),
    ("search", "search.cli", "add_arguments",
     "the best subnet per device budget (accuracy table, predictor, NSGA-II)"),
    ("deploy", "deploy.cli", "add_arguments", "dense, exported, measured subnets for the devices the search chose"),
    ("profile", "deploy.cli", "add_profile_arguments", "measure a latency table on this device"),
)


class _Parser(argparse.ArgumentParser):
    """Every subcommand's parser: its options list their defaults."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ofa", formatter_class=HelpFormatter, epilog=EPILOG,
        description="Train one elastic supernet once, then hand every device the subnet that fits its budget.")
    parser.add_argument("--version", action="version", version=f"ofa-supernet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    info.add_arguments(sub.add_parser("info", help="list the registered supernets and their search spaces"))
    demo.add_arguments(sub.add_parser(
        "demo", help="train, search and deploy on the embedded digits (a few minutes on a CPU)"))
    for command, module, adder, help_line in STAGES:
        stage = sub.add_parser(command, help=help_line)
        try:  # the stages' cli modules import only argparse at module level, so `ofa --help` stays instant
            getattr(own_module(module), adder)(stage)
        except (ImportError, OFAError):  # shadowed by a user's train.py: report it when the subcommand runs
            stage.add_argument("rest", nargs=argparse.REMAINDER)
            stage.set_defaults(func=lambda a, m=module: own_module(m.split(".")[0]) and own_module(m) and 2)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        if args.command == "info":
            return int(args.func(args) or 0)
        from ..timing import default_threads, num_threads

        threads = getattr(args, "threads", None)
        if threads is not None and threads < 1:
            raise OFAError(f"--threads must be a positive integer, got {threads}")
        with num_threads(threads or default_threads()):  # fixed for the whole command (latency depends on it)
            return int(args.func(args) or 0)
    except OFAError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # always one line
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
