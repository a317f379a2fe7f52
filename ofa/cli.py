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
from .cli_format import THREADS_HELP, HelpFormatter
from .demo_configs import DEMOS, demo_config
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


# -- ofa demo: the whole product on the embedded digits ----------------------------------------------------------
# The demo ties train, search and deploy together, which only this module may do (lazily).

DEMO_STAGES = ("train", "profile", "search", "deploy")
DEMO_DEVICE = "this-cpu"  # the latency table profiled on this machine
DEMO_INT8 = "server"  # deployed in int8 too: the largest subnet, where quantization has the most to speed up


def _demo_state(out: Path, mode: str, supernet: str) -> dict:
    """The demo's progress file; refuses a directory that holds anything else, or a demo of another mode or
    supernet."""
    state_path = out / "demo.json"
    if state_path.is_file():
        from .io import read_json

        state = read_json(state_path, hint=f"remove {out} or choose another --out")
        if state.get("mode") != mode:
            other = "--quick" if state.get("mode") == "quick" else "the default (no --quick)"
            raise OFAError(f"{out} holds a demo run with {other}; rerun with the same mode to resume it, or choose "
                           "another --out")
        if state.get("supernet", "ofa_resnet_tiny") != supernet:
            raise OFAError(f"{out} holds a demo run of --supernet {state.get('supernet', 'ofa_resnet_tiny')}; rerun "
                           "with that supernet to resume it, or choose another --out")
        return state
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OFAError(f"{out} exists and is not an ofa demo directory; choose another --out (or remove it)")
    return {"mode": mode, "supernet": supernet, "done": []}


def _demo_save(out: Path, state: dict) -> None:
    from .io import atomic_write

    atomic_write(out / "demo.json", lambda tmp: Path(tmp).write_text(json.dumps(state, indent=2)))


def demo_budgets(run: Path, supernet: str = "ofa_resnet_tiny") -> list:
    """Three MAC budgets (micro, mobile, server) and one latency budget from the table profiled here."""

    from .io import load
    from .latency import LatencyTable

    search_budgets = _own_module("search.budgets")
    net = load(run / "supernet.safetensors")
    table = LatencyTable.load(run / "latency" / f"{DEMO_DEVICE}.json")
    space = net.space
    # The latency budget sits 40% of the way from the smallest to the largest subnet's predicted latency here.
    low, high = table.predict(net, space.smallest()), table.predict(net, space.largest())
    latency_ms = float(f"{low + 0.4 * (high - low):.3g}")
    macs = [search_budgets.Budget(name, macs=value, precision="int8" if name == DEMO_INT8 else "float32")
            for name, value in DEMOS[supernet]["macs"].items()]
    return macs + [search_budgets.Budget(DEMO_DEVICE, latency_ms=latency_ms, latency_device=DEMO_DEVICE)]


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    mode = "quick" if args.quick else "default"
    out = Path(args.out)
    state = _demo_state(out, mode, args.supernet)
    _own_module("deploy.export").require_export_packages()  # before minutes of training, not after
    out.mkdir(parents=True, exist_ok=True)
    _demo_save(out, state)
    progress = not args.quiet
    started = time.perf_counter()

    def stage(name: str, work) -> None:
        if name in state["done"]:
            print(f"[demo] {name}: already done in {out}, skipped")
            return
        t0 = time.perf_counter()
        print(f"[demo] {name} ...", flush=True)
        work()
        state["done"].append(name)
        state.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
        _demo_save(out, state)
        print(f"[demo] {name}: done in {time.perf_counter() - t0:.0f} s", flush=True)

    def train_stage() -> None:
        trainer = _own_module("train.trainer")
        checkpoints = _own_module("train.checkpoint")
        if (out / "config.yaml").is_file() and checkpoints.latest_checkpoint(out) is not None:
            # an interrupted demo continues where it stopped
            trainer.train(resume=out, progress=progress, overrides={"threads": args.threads})
            return
        for stale in ("config.yaml", "metrics.csv"):  # written before the first checkpoint: start over
            (out / stale).unlink(missing_ok=True)
        trainer.train(demo_config(args.quick, args.supernet), out, progress=progress,
                      overrides={"threads": args.threads})

    def profile_stage() -> None:
        deploy_profile = _own_module("deploy.profile")
        # The full table even with --quick: it takes seconds for the demo supernets, and a coarse one is too
        # noisy to budget against.
        table = deploy_profile.profile(str(out / "supernet.safetensors"), device=DEMO_DEVICE,
                                       out=out / "latency" / f"{DEMO_DEVICE}.json", progress=progress)
        acc = table.meta["accuracy"]
        print(f"[demo] latency table: {len(table.units)} units, MAPE on {acc['eval_subnets']} random subnets "
              f"{acc['mape_sum_pct']:.1f}% summed, {acc['mape_corrected_pct']:.1f}% corrected")

    def search_stage() -> None:
        search_run = _own_module("search.run")
        config = search_run.SearchConfig(
            run_dir=out, budgets=demo_budgets(out, args.supernet), nested=True, progress=progress,
            strict_latency=False,  # a busy machine times slower than it profiled: report it, finish the demo
            table_size=40 if args.quick else 150, effort="quick" if args.quick else "default",
            predictor_epochs=150 if args.quick else 300)
        search_run.search(config)

    def deploy_stage() -> None:
        deploy_run = _own_module("deploy.run")
        result = deploy_run.deploy_run(out, slimmable=True, repeats=10 if args.quick else 30,
                                       latency_table=out / "latency" / f"{DEMO_DEVICE}.json",
                                       calib_batches=8 if args.quick else 32, progress=progress)
        state["report"] = str(result.report)

    stage("train", train_stage)
    stage("profile", profile_stage)
    stage("search", search_stage)
    stage("deploy", deploy_stage)
    _print_demo_table(out)
    print(f"\n[demo] finished in {time.perf_counter() - started:.0f} s: {out / 'report.md'}, "
          f"{out / 'search' / 'pareto.png'}, {out / 'deploy'}/DEVICE/model.onnx")
    return 0


def _print_demo_table(out: Path) -> None:
    selected = json.loads((out / "search" / "selected.json").read_text())
    header = (f"{'device':10s} {'MACs':>8s} {'params':>8s} {'latency':>9s} {'LUT':>8s} {'predicted':>10s} "
              f"{'measured top-1 (test) [95% CI]':>32s}")
    print("\n" + header + "\n" + "-" * len(header))
    for device in selected["order"]:
        report = json.loads((out / "deploy" / device / "report.json").read_text())
        measured = report["top1"]["measured"]
        predicted = selected["devices"][device]["predicted"]
        lut = report.get("latency_predicted_ms")
        print(f"{device:10s} {report['macs'] / 1e6:7.2f}M {report['params'] / 1e6:7.3f}M "
              f"{report['latency']['batch1']['median_ms']:7.3f}ms {'' if lut is None else f'{lut:6.3f}ms':>8s} "
              f"{predicted['value']:9.2f}{'%' if predicted['metric'] == 'top1' else ''} "
              f"{measured['top1']:14.2f}% [{measured['ci_low']:.2f}, {measured['ci_high']:.2f}]")
    for device in selected["order"]:
        report = json.loads((out / "deploy" / device / "report.json").read_text())
        if report.get("latency_budget_ms") is not None:
            b1 = report["latency"]["batch1"]
            print(f"{device}: latency budget {report['latency_budget_ms']:g} ms; deployed {b1['median_ms']:.3f} ms "
                  f"(median [p10 {b1['p10_ms']:.3f}, p90 {b1['p90_ms']:.3f}], {b1['threads']} threads): "
                  + ("within budget" if report["within_latency_budget"] else "OVER BUDGET"))
        if report.get("int8"):
            print(f"{device} int8: {_own_module('deploy.report').int8_line(report['int8'])}")


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

    info = sub.add_parser("info", help="list the registered supernets and their search spaces",
                          description="List the registered supernets, their search spaces and the cost range "
                                      "(MACs, parameters) from the smallest to the largest subnet.")
    info.add_argument("name", nargs="?", help="show only this supernet")
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")
    info.set_defaults(func=cmd_info)

    demo = sub.add_parser("demo", help="train, search and deploy on the embedded digits (a few minutes on a CPU)",
                          description="Run the whole product on the embedded MNIST digits (mnist5k) with "
                                      "ofa_resnet_tiny: train every phase, profile a latency table on this machine, "
                                      "measure subnets and fit the predictor, search three MAC budgets (micro, "
                                      "mobile, server) and one latency budget as a nested chain, then deploy dense "
                                      "ONNX-checked subnets (server also in int8, compared with its float model) "
                                      "and one runtime-slimmable network. Re-running into the same --out resumes "
                                      "where it stopped.")
    demo.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    demo.add_argument("--quick", action="store_true", help="fewer steps and subnets: about 2 minutes (used by CI)")
    demo.add_argument("--supernet", default="ofa_resnet_tiny", choices=sorted(DEMOS),
                      help="the supernet to demonstrate: the ResNet (default) or the MobileNetV3 family")
    demo.add_argument("--threads", type=int, help=THREADS_HELP)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

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
                                        "report.json) and RUN/report.md. Devices whose budget says precision: int8 "
                                        "(or all, with --int8) also get model.int8.onnx: static post-training "
                                        "quantization (onnxruntime, QDQ, per-channel int8 weights) calibrated on the "
                                        "calib split, its test top-1 and onnxruntime latency reported next to the "
                                        "float model's.")
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
    deploy.set_defaults(func=lambda a: _own_module("deploy.cli").cmd_deploy(a))

    profile = sub.add_parser("profile", help="measure a latency table on this device",
                             description="Time every distinct layer unit of a supernet's space on this device and "
                                         "write a latency table (report its accuracy on random subnets).")
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
    profile.set_defaults(func=lambda a: _own_module("deploy.cli").cmd_profile(a))
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
        from .timing import default_threads, num_threads

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


if __name__ == "__main__":
    sys.exit(main())
