"""``ofa demo``: the whole product on the embedded digits, stage by stage (train, profile, search, deploy),
resumable. It ties train, search and deploy together, which only the command line may do (lazily)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .. import configs
from ..errors import OFAError
from ..rundir import DeployReport, RunDir, Selection
from .format import THREADS_HELP
from .modules import own_module

# Per demo supernet: the shipped config it trains, three MAC budgets spread over its cost range, and what --quick
# trims.
DEMOS: dict[str, dict[str, Any]] = {
    "ofa_resnet_tiny": {
        "config": "tiny_cpu",
        "macs": {"micro": 3_000_000, "mobile": 8_000_000, "server": 20_000_000},
        "quick": {"batch_size": 64, "steps_per_epoch": 12},  # 36 steps of the full network, 12 per later phase
    },
    "ofa_mbv3_tiny": {
        "config": "mbv3_tiny_cpu",
        "macs": {"micro": 3_000_000, "mobile": 6_000_000, "server": 12_000_000},
        "quick": {"batch_size": 32, "steps_per_epoch": 40},  # the full MobileNet needs ~100 steps to learn
    },
}
STAGES = ("train", "profile", "search", "deploy")
DEVICE = "this-cpu"  # the latency table profiled on this machine
INT8_DEVICE = "server"  # deployed in int8 too: the largest subnet, where quantization has the most to speed up


def demo_config(quick: bool, supernet: str = "ofa_resnet_tiny") -> dict[str, Any]:
    """The demo's training config: the shipped one; ``quick`` trains the full network 3 short epochs and each later
    phase one (a weak largest subnet teaches badly in place)."""
    from ..io import read_yaml

    config = read_yaml(configs.path(DEMOS[supernet]["config"]))
    if quick:
        for phase in config["phases"]:
            phase["epochs"], phase["warmup_epochs"] = (3 if phase["name"] == "full" else 1), 0
        quick_steps = DEMOS[supernet]["quick"]
        config.update(batch_size=quick_steps["batch_size"], max_steps_per_epoch=quick_steps["steps_per_epoch"],
                      checkpoint_every=20, eval={"calib_images": 256, "val_images": 500, "batch_size": 250})
    return config


def add_arguments(demo: argparse.ArgumentParser) -> None:
    demo.description = (
        "Run the whole product on the embedded MNIST digits (mnist5k) with ofa_resnet_tiny: train every phase, "
        "profile a latency table on this machine, measure subnets and fit the predictor, search three MAC budgets "
        "(micro, mobile, server) and one latency budget as a nested chain, then deploy dense ONNX-checked subnets "
        "(server also in int8, compared with its float model) and one runtime-slimmable network. Re-running into "
        "the same --out resumes where it stopped.")
    demo.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    demo.add_argument("--quick", action="store_true", help="fewer steps and subnets: about 2 minutes (used by CI)")
    demo.add_argument("--supernet", default="ofa_resnet_tiny", choices=sorted(DEMOS),
                      help="the supernet to demonstrate: the ResNet (default) or the MobileNetV3 family")
    demo.add_argument("--threads", type=int, help=THREADS_HELP)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)


def _state(out: Path, mode: str, supernet: str) -> dict:
    """The demo's progress file; refuses a directory that holds anything else, or a demo of another mode or
    supernet."""
    from ..io import read_json

    state_path = out / "demo.json"
    if state_path.is_file():
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


def _save(out: Path, state: dict) -> None:
    from ..io import atomic_write

    atomic_write(out / "demo.json", lambda tmp: Path(tmp).write_text(json.dumps(state, indent=2)))


def demo_budgets(run: Path, supernet: str = "ofa_resnet_tiny") -> list:
    """Three MAC budgets (micro, mobile, server) and one latency budget from the table profiled here."""
    from ..io import load
    from ..latency import LatencyTable

    search_budgets = own_module("search.budgets")
    net = load(RunDir(run).supernet)
    table = LatencyTable.load(RunDir(run).latency_table(DEVICE))
    space = net.space
    # The latency budget sits 40% of the way from the smallest to the largest subnet's predicted latency here.
    low, high = table.predict(net, space.smallest()), table.predict(net, space.largest())
    latency_ms = float(f"{low + 0.4 * (high - low):.3g}")
    macs = [search_budgets.Budget(name, macs=value, precision="int8" if name == INT8_DEVICE else "float32")
            for name, value in DEMOS[supernet]["macs"].items()]
    return macs + [search_budgets.Budget(DEVICE, latency_ms=latency_ms, latency_device=DEVICE)]


def cmd_demo(args: argparse.Namespace) -> int:
    mode = "quick" if args.quick else "default"
    out = Path(args.out)
    run = RunDir(out)
    state = _state(out, mode, args.supernet)
    own_module("deploy.export").require_export_packages()  # before minutes of training, not after
    out.mkdir(parents=True, exist_ok=True)
    _save(out, state)
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
        _save(out, state)
        print(f"[demo] {name}: done in {time.perf_counter() - t0:.0f} s", flush=True)

    def train_stage() -> None:
        trainer = own_module("train.trainer")
        checkpoints = own_module("train.checkpoint")
        if run.config.is_file() and checkpoints.latest_checkpoint(out) is not None:
            # an interrupted demo continues where it stopped
            trainer.train(resume=out, progress=progress, overrides={"threads": args.threads})
            return
        for stale in (run.config, run.metrics):  # written before the first checkpoint: start over
            stale.unlink(missing_ok=True)
        trainer.train(demo_config(args.quick, args.supernet), out, progress=progress,
                      overrides={"threads": args.threads})

    def profile_stage() -> None:
        deploy_profile = own_module("deploy.profile")
        # The full table even with --quick: it takes seconds for the demo supernets, and a coarse one is too
        # noisy to budget against.
        table = deploy_profile.profile(str(run.supernet), device=DEVICE, out=run.latency_table(DEVICE),
                                       progress=progress)
        acc = table.meta["accuracy"]
        print(f"[demo] latency table: {len(table.units)} units, MAPE on {acc['eval_subnets']} random subnets "
              f"{acc['mape_sum_pct']:.1f}% summed, {acc['mape_corrected_pct']:.1f}% corrected")

    def search_stage() -> None:
        search_run = own_module("search.run")
        config = search_run.SearchConfig(
            run_dir=out, budgets=demo_budgets(out, args.supernet), nested=True, progress=progress,
            strict_latency=False,  # a busy machine times slower than it profiled: report it, finish the demo
            table_size=40 if args.quick else 150, effort="quick" if args.quick else "default",
            predictor_epochs=150 if args.quick else 300)
        search_run.search(config)

    def deploy_stage() -> None:
        deploy_run = own_module("deploy.run")
        result = deploy_run.deploy_run(out, slimmable=True, repeats=10 if args.quick else 30,
                                       latency_table=run.latency_table(DEVICE),
                                       calib_batches=8 if args.quick else 32, progress=progress)
        state["report"] = str(result.report)

    stage("train", train_stage)
    stage("profile", profile_stage)
    stage("search", search_stage)
    stage("deploy", deploy_stage)
    print_table(out)
    print(f"\n[demo] finished in {time.perf_counter() - started:.0f} s: {run.report}, "
          f"{run.pareto_png}, {run.deploy}/DEVICE/model.onnx")
    return 0


def print_table(out: Path) -> None:
    """The demo's closing table: each device's deployed costs, latency and test top-1 against the prediction."""
    run = RunDir(out)
    selected = Selection.read(run.selection)
    reports = {device: DeployReport.read(run.device_report(device)) for device in selected.order}
    header = (f"{'device':10s} {'MACs':>8s} {'params':>8s} {'latency':>9s} {'LUT':>8s} {'predicted':>10s} "
              f"{'measured top-1 (test) [95% CI]':>32s}")
    print("\n" + header + "\n" + "-" * len(header))
    for device, report in reports.items():
        measured = report.measured
        predicted = selected.devices[device].predicted
        lut = report.latency_predicted_ms
        print(f"{device:10s} {report.macs / 1e6:7.2f}M {report.params / 1e6:7.3f}M "
              f"{report.batch1['median_ms']:7.3f}ms {'' if lut is None else f'{lut:6.3f}ms':>8s} "
              f"{predicted['value']:9.2f}{'%' if predicted['metric'] == 'top1' else ''} "
              f"{measured['top1']:14.2f}% [{measured['ci_low']:.2f}, {measured['ci_high']:.2f}]")
    for device, report in reports.items():
        if report.latency_budget_ms is not None:
            b1 = report.batch1
            print(f"{device}: latency budget {report.latency_budget_ms:g} ms; deployed {b1['median_ms']:.3f} ms "
                  f"(median [p10 {b1['p10_ms']:.3f}, p90 {b1['p90_ms']:.3f}], {b1['threads']} threads): "
                  + ("within budget" if report.within_latency_budget else "OVER BUDGET"))
        if report.int8:
            print(f"{device} int8: {own_module('deploy.report').int8_line(report.int8)}")
