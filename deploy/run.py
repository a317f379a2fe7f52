"""``ofa deploy RUN``: one dense, verified, measured artifact per device chosen by the search.

For each device in ``RUN/search/selected.json``: extract the subnet with its own calibrated BN statistics, write
``RUN/deploy/DEVICE/`` (``model.safetensors`` + ``model.json``, ``model.onnx`` checked with onnxruntime,
``model.pt2`` from ``torch.export``, ``report.json``), then ``RUN/report.md`` over all devices. A device's
folder is built beside its final place and renamed into it, so an interrupted deploy never leaves a half-written
artifact. With ``slimmable=True`` the chosen subnets (nested, smallest first) also become one
:class:`deploy.SlimmableNet` in ``RUN/deploy/slimmable/``. A device whose precision is int8 (``int8=True`` for
all, or ``precision: int8`` in its budget) also gets ``model.int8.onnx``, measured against the float model
(``deploy.quantize``).
"""

from __future__ import annotations

import copy
import os
import platform
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import ofa
from ofa.errors import OFAError
from ofa.fold import fold_bn, prepare_for_inference
from ofa.io import apply_umask
from ofa.latency import LatencyTable, check_precision
from ofa.rundir import DeployReport, RunDir, SelectedDevice, Selection, SlimmableReport
from ofa.timing import measure_latency_checked, num_threads, time_pair

from .config import DeployConfig
from .export import export_onnx, export_program, require_export_packages, verify_onnx, verify_program
from .report import write_report
from .slimmable import SlimmableNet, check_nested, state_bytes


@dataclass
class DeployResult:
    run: Path
    devices: dict[str, DeployReport] = field(default_factory=dict)  # device -> its report.json
    report: Path | None = None
    slimmable: Path | None = None


def read_selected(run: Path) -> Selection:
    if not run.is_dir():
        raise OFAError(f"run directory {run} does not exist; give the folder `ofa train --out` wrote")
    path = RunDir(run).selection
    if not path.is_file():
        raise OFAError(f"{path} does not exist; run `ofa search {run}` first to choose a subnet per device")
    selected = Selection.read(path, hint="run `ofa search` again")
    if not selected.devices:
        raise OFAError(f"{path} lists no devices (expected a 'devices' object); run `ofa search` again")
    return selected


def _device_order(selected: Selection, devices: list[str] | None) -> list[str]:
    known = selected.ordered()
    if not devices:
        return known
    for d in devices:
        if d not in selected.devices:
            raise OFAError(f"device {d!r} is not in search/selected.json; available: {', '.join(known)}")
    return [d for d in known if d in devices]


def _latency_table(run: Path, device: str, entry: SelectedDevice, explicit: str | os.PathLike | None,
                   precision: str = "float32"):
    """The table to predict this device's latency with: the given path if it times this precision, else
    RUN/latency/<device>.json (RUN/latency/<device>.int8.json for an int8 device)."""
    if explicit is not None:
        table = LatencyTable.load(explicit)
        if table.precision == precision:
            return table, Path(explicit)
    budget = entry.budget or {}
    for name in (budget.get("latency_device"), device):
        path = RunDir(run).latency_table(name, precision) if name else None
        if path is not None and path.is_file():
            return LatencyTable.load(path), path
    return None, None


def device_precisions(selected: Selection, names: list[str], int8: bool) -> dict[str, str]:
    """Each device's precision: int8 for all with ``int8``, else its budget's ``precision`` (default float32)."""
    return {d: check_precision("int8" if int8 else selected.devices[d].precision,
                               f"search/selected.json: device {d!r}") for d in names}


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished folder into place, replacing an older one only once the new one is complete."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old)


def _load_data(run: Path, data):
    if data is not None:
        return data
    from ofa.data import load_run_data

    return load_run_data(run)


def deploy_run(run: str | os.PathLike, data=None, **options: Any) -> DeployResult:
    """:func:`deploy` with the :class:`DeployConfig` given as keyword arguments (``devices=["phone"]``, ...)."""
    return deploy(DeployConfig(run, **options), data)


def deploy(cfg: DeployConfig, data=None) -> DeployResult:
    """Deploy the subnets ``RUN/search/selected.json`` chose (all devices, or ``cfg.devices``); with ``cfg.int8``
    every device also gets an int8 model (devices whose budget says ``precision: int8`` get one anyway). An int8
    drop in test top-1 whose 95% interval lies above ``cfg.int8_tolerance_pp`` is flagged in the reports. A
    subnet at chance level on test is refused unless ``cfg.force``. ``data``: the run's dataset by default."""
    run = cfg.run
    from .quantize import require_int8_packages

    require_int8_packages() if cfg.int8 else require_export_packages()
    selected = read_selected(run)
    names = _device_order(selected, cfg.devices)
    precisions = device_precisions(selected, names, cfg.int8)
    if "int8" in precisions.values():
        require_int8_packages()
    supernet_path = run / selected.supernet
    net = ofa.load(supernet_path).eval()
    archs = {}
    for d in names:  # every selected arch must belong to this supernet's space: checked before any work
        try:
            archs[d] = net.space.arch_from_dict(selected.devices[d].arch)
        except ofa.ArchError as e:
            raise OFAError(f"{RunDir(run).selection}: device {d!r}: {e} (was it searched with another "
                           "supernet?)") from None
    if cfg.slimmable:  # refuse non-nested subnets before any work is done
        try:
            check_nested([net.static_description(archs[d]) for d in names], names)
        except OFAError as e:
            raise OFAError(f"--slimmable needs nested subnets, smallest first (run `ofa search --nested`): "
                           f"{e}") from None
    data = _load_data(run, data)
    result = DeployResult(run)
    statics = []
    for device in tqdm(names, desc="deploying", disable=not cfg.progress):
        entry = selected.devices[device]
        arch = archs[device]
        calib = data.eval_loader("calib", arch.resolution, batch_size=cfg.batch_size)
        static = net.extract(arch, calib_batches=calib, num_batches=cfg.calib_batches).eval()
        static.description["data_config"] = dict(data.data_config, input_size=[net.in_chans, arch.resolution,
                                                                                 arch.resolution])
        if len(data.class_names) == net.num_classes:
            static.description["class_names"] = list(data.class_names)  # what each output means, for serving
        statics.append(static)
        int8_settings = None if precisions[device] != "int8" else dict(
            calib_batches=cfg.calib_batches, batch_size=cfg.batch_size, tolerance_pp=cfg.int8_tolerance_pp)
        report = _deploy_one(run, device, entry, static, data, cfg.latency_table, net, arch,
                             dict(repeats=cfg.repeats, warmup=cfg.warmup, threads=cfg.threads), int8_settings,
                             cfg.force)
        result.devices[device] = report
    if cfg.slimmable:
        result.slimmable = _deploy_slimmable(run, names, statics, cfg.repeats, cfg.warmup, cfg.threads)
    result.report = write_report(run, order=selected.order)
    return result


def _deploy_one(run: Path, device: str, entry: SelectedDevice, static, data, latency_table, net, arch,
                timing: dict[str, Any], int8: dict[str, Any] | None = None, force: bool = False) -> DeployReport:
    paths = RunDir(run)
    paths.deploy.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{device}.", dir=paths.deploy))
    apply_umask(tmp)  # mkdtemp makes it 0700: a serving process of another user must read the deployed model
    try:
        folded = fold_bn(static)
        deployed = prepare_for_inference(folded)  # what deploy.load returns
        measured = ofa.evaluate(deployed, data.eval_loader("test", arch.resolution, batch_size=256))
        if measured.at_chance(net.num_classes) and not force:  # before the exports: nothing to undo
            raise OFAError(f"{device}: test top-1 {measured.interval_text()} is at chance level "
                           f"({100 / net.num_classes:.1f}% for "
                           f"{net.num_classes} classes): the supernet did not learn (see RUN/metrics.csv); not "
                           "deployed (--force deploys it anyway)")
        ofa.save(static, tmp / "model.safetensors")
        export_onnx(folded, tmp / "model.onnx")
        onnx_check = verify_onnx(tmp / "model.onnx", static)
        export_program(folded, tmp / "model.pt2")
        program_check = verify_program(tmp / "model.pt2", static)
        shape = tuple(static.description["data_config"]["input_size"])
        precision = "float32" if int8 is None else "int8"
        table, table_path = _latency_table(run, device, entry, latency_table, precision)
        if timing["threads"] is None and table is not None and table.meta.get("threads"):
            timing = dict(timing, threads=int(table.meta["threads"]))  # what the table's budgets bound
        predicted_ms = table.predict(net, arch) if table is not None else None
        latency = {f"batch{b}": measure_latency_checked(deployed, shape, batch=b, **timing,
                                                        predicted_ms=predicted_ms if b == 1 else None)
                   for b in (1, 32)}
        for b, m in latency.items():
            if "unstable" in m:
                print(f"warning: {device}: the {b} latency stayed unsteady over {m['tries']} measurements "
                      f"({m['unstable']}); reported as measured, marked unstable", file=sys.stderr)
        budget_ms = (entry.budget or {}).get("latency_ms")
        quantized = None
        if int8 is not None:
            from .quantize import int8_report

            quantized = int8_report(tmp, data, arch.resolution, int8["calib_batches"], int8["batch_size"],
                                    latency["batch1"]["threads"], timing["repeats"], timing["warmup"],
                                    int8["tolerance_pp"])
        # what a latency budget bounds: the batch-1 median of the form the device runs
        budget_latency = (latency["batch1"] if quantized is None else quantized["latency"]["int8"])["median_ms"]
        report = DeployReport(
            device=device, precision=precision, arch=arch.to_dict(), budget=entry.budget,
            macs=static.description["macs"], params=static.description["params"],
            preprocessing=static.description["data_config"],
            files={p.name: p.stat().st_size for p in sorted(tmp.iterdir())},
            bn_folded_for_inference=True,
            onnx_check=onnx_check, torch_export_check=program_check,
            latency={"host": platform.node(), "machine": platform.machine(),
                     "form": "deploy.load (BN folded, channels-last)", "statistic": "median", **latency},
            latency_predicted_ms=predicted_ms,
            latency_budget_ms=budget_ms,
            within_latency_budget=None if budget_ms is None else budget_latency <= budget_ms,
            latency_verified_by_search=entry.latency_measured,
            latency_table=None if table is None else {
                "device": table.device, "path": str(table_path), "correction": table.correction.get("kind"),
                "runtime": table.runtime, "precision": table.precision,
                "mape_pct": table.meta.get("accuracy", {}).get("mape_pct")},
            int8=quantized,
            top1={"predicted": entry.predicted,
                  "measured": {"split": "test", **measured.to_dict(), "n": measured.total},
                  "measured_by_search": entry.measured},
        )
        if not onnx_check["passed"]:
            raise OFAError(f"{device}: the ONNX file differs from PyTorch by {onnx_check['max_abs_diff']:.2e} "
                           f"(> {onnx_check['allowed_diff']:.2e}: {onnx_check['tolerance']} times the largest "
                           f"output, at least 1); not deployed")
        report.write(tmp / DeployReport.FILE)
        report.files[DeployReport.FILE] = (tmp / DeployReport.FILE).stat().st_size
        _replace_dir(tmp, paths.device_dir(device))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _dropped_memory(slim: SlimmableNet) -> int:
    """Bytes an inference-only copy holds after ``drop_stored()`` (per-width weights only)."""
    inference_only = copy.deepcopy(slim)
    inference_only.drop_stored()
    return inference_only.memory_bytes()["total"]


def _slim_vs_dense(slim: SlimmableNet, dense, shape: tuple[int, ...], repeats: int, warmup: int) -> dict:
    """Median latency of the slimmable network at its current width and of that width's dense deployed network,
    timed interleaved at batch 1 and 32."""
    out = {}
    for batch in (1, 32):
        slim_ms, dense_ms = time_pair(slim, dense, torch.randn(batch, *shape), repeats, warmup)
        s, d = statistics.median(slim_ms), statistics.median(dense_ms)
        out[f"batch{batch}"] = {"slimmable_ms": s, "dense_ms": d, "ratio": s / d}
    return out


def _deploy_slimmable(run: Path, names: list[str], statics: list, repeats: int, warmup: int,
                      threads: int | None) -> Path:
    try:
        slim = SlimmableNet.from_dense(statics, names)
    except OFAError as e:
        raise OFAError(f"--slimmable needs nested subnets (run `ofa search --nested`): {e}") from None
    # timed as deploy.load gives it (fast mode within its memory limit, which may fold the stored weights in
    # place); `slim` keeps its stored weights, to be saved
    timed = copy.deepcopy(slim)
    diffs, timing = [], []
    with num_threads(threads):
        for i, static in enumerate(statics):
            timed.set_width(i)
            shape = tuple(static.description["data_config"]["input_size"])
            x = torch.randn(4, *shape)
            with torch.inference_mode():
                diffs.append(float((timed(x) - static(x)).abs().max()))
            timing.append(_slim_vs_dense(timed, prepare_for_inference(static), shape, repeats, warmup))
    slim.latency_ms = [t["batch1"]["slimmable_ms"] for t in timing]  # what the latency controller picks by
    paths = RunDir(run)
    tmp = Path(tempfile.mkdtemp(prefix=".slimmable.", dir=paths.deploy))
    apply_umask(tmp)
    try:
        slim.save(tmp / "slimmable.safetensors")
        report = SlimmableReport(
            widths=names, latency_ms_batch1=slim.latency_ms, threads=threads or torch.get_num_threads(),
            mode=timed.mode, memory_limit=timed.memory_limit, memory_bytes=timed.memory_bytes(),
            derived_widths=[names[i] for i in timed.derived_widths],
            memory_bytes_after_drop_stored=_dropped_memory(slim),
            largest_dense_bytes=state_bytes(statics[-1]),
            timing={"statistic": "median", "how": "each width interleaved with its dense deployed network",
                    "repeats": repeats, "warmup": warmup, "per_width": timing},
            max_abs_diff_vs_dense=diffs,
            macs=[s.description["macs"] for s in statics],
            files={p.name: p.stat().st_size for p in sorted(tmp.iterdir())})
        report.write(tmp / SlimmableReport.FILE)
        _replace_dir(tmp, paths.slimmable_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return paths.slimmable_dir / "slimmable.safetensors"
