"""``ofa info``: the registered supernets, their search spaces and cost ranges."""

from __future__ import annotations

import argparse
import json
import sys

from .. import __version__
from .modules import foreign_ofa_distributions


def add_arguments(info: argparse.ArgumentParser) -> None:
    info.description = ("List the registered supernets, their search spaces and the cost range (MACs, parameters) "
                        "from the smallest to the largest subnet.")
    info.add_argument("name", nargs="?", help="show only this supernet")
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")
    info.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from ..registry import list_supernets, supernet_entry

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
