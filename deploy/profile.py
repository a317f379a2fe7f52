"""``ofa profile``: make a latency table on the device it runs on, and measure how well it predicts.

Every distinct unit the search space can produce (its family's: stem, blocks, head) is built as the deployed
network runs it (plain layers, BatchNorm folded, channels-last weights) and timed at batch 1 (a low percentile of
runs spread over several shuffled passes, so that a burst of load elsewhere touches few of any unit's runs). Then
whole subnets spread over the table's range are extracted, folded and timed by their median: a linear correction
``median = scale * sum + offset`` is fitted on one set and the table's error (mean absolute percentage error) is
reported on another, held-out set, for the plain sum and the corrected sum. The correction is kept only when it is
more accurate on the held-out subnets (then refitted on all of them); the table says which is used.

With ``int8=True`` units and subnets are timed as ``ofa deploy --int8`` ships them: statically quantized ONNX
models in onnxruntime (``deploy.quantize``); the table records that runtime and precision.
"""

from __future__ import annotations

import os
import platform
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import ofa
from ofa.fold import prepare_for_inference
from ofa.latency import LatencyTable, distinct_units
from ofa.registry import get_family
from ofa.rundir import RunDir
from ofa.timing import num_threads, summarize, time_forward


@dataclass(frozen=True)
class ProfileSettings:
    repeats: int = 24        # timed runs per unit (split over `rounds` passes over all units)
    rounds: int = 3          # passes over all units (shuffled) and subnets, so a burst of load skews few runs
    warmup: int = 3
    fit_subnets: int = 20    # whole subnets the correction is fitted on
    eval_subnets: int = 30   # held-out whole subnets the accuracy is reported on
    subnet_repeats: int = 24
    # What the table predicts: the median of whole networks, what a latency budget bounds and deploy reports.
    statistic: str = "median_ms"
    # What a unit is timed by: a low percentile. On a machine whose speed flips between modes (seen on a 2-core VM:
    # one network's runs fall near 1.1 ms or near 1.8 ms, its median anywhere between), a unit's median moved 35%
    # from one profile to the next and its p10 1%, and the search seeks out the units timed low by chance, so unit
    # noise became the error of exactly the subnets it picks. The correction, fitted on whole subnets' medians,
    # maps the summed p10 times to the median.
    unit_statistic: str = "p10_ms"

    @classmethod
    def coarse(cls) -> ProfileSettings:
        """A quick table for tests and CI: fewer repeats and subnets (noisier, same format)."""
        return cls(repeats=4, rounds=1, warmup=1, fit_subnets=6, eval_subnets=8, subnet_repeats=6)


def build_unit(unit: dict[str, Any], family: str) -> tuple[nn.Module, tuple[int, ...]]:
    """The deployed-form module of one table unit (its family builds it) and its input shape (C, H, W)."""
    module, shape = get_family(family).build_unit(unit)
    return prepare_for_inference(module, inplace=True), shape


def _supernet(supernet: str | nn.Module) -> nn.Module:
    if isinstance(supernet, nn.Module):
        return supernet
    path = Path(str(supernet))
    if path.suffix in (".safetensors", ".json") or path.is_dir():
        if path.is_dir():
            path = RunDir(path).supernet
        return ofa.load(path)
    return ofa.create_supernet(str(supernet))


# The modules and input shapes to time -> what is timed in their place (e.g. int8 onnxruntime models)
Converter = Callable[[list[nn.Module], list[tuple[int, ...]]], list[Any]]


def _convert(built: dict[str, tuple[Any, tuple[int, ...]]], convert: Converter | None) -> dict:
    if convert is None:
        return built
    converted = convert([m for m, _ in built.values()], [s for _, s in built.values()])
    return {key: (c, shape) for (key, (_, shape)), c in zip(built.items(), converted)}


def time_units(units: dict[str, dict[str, Any]], family: str, settings: ProfileSettings, seed: int = 0,
               progress: bool = True, convert: Converter | None = None) -> dict[str, float]:
    """Batch-1 time (ms, ``settings.statistic``) of every unit, measured over ``settings.rounds`` shuffled passes.

    A converted unit may carry a ``baseline``: the same call doing no work (an onnxruntime session run costs about
    15 us of its own, which a network pays once, not once per unit). Its time, measured alongside, is subtracted."""
    built = _convert({key: build_unit(unit, family) for key, unit in units.items()}, convert)
    inputs = {key: torch.randn(1, *shape) for key, (_, shape) in built.items()}
    times: dict[str, list[float]] = {key: [] for key in units}
    baselines: dict[str, list[float]] = {key: [] for key in units}
    rng = random.Random(seed)
    per_round = max(1, settings.repeats // settings.rounds)
    order = list(units)
    bar = tqdm(total=len(order) * settings.rounds, desc="timing units", disable=not progress, leave=False)
    for _ in range(settings.rounds):
        rng.shuffle(order)
        for key in order:
            times[key] += time_forward(built[key][0], inputs[key], repeats=per_round, warmup=settings.warmup)
            baseline = getattr(built[key][0], "baseline", None)
            if baseline is not None:
                baselines[key] += time_forward(baseline, inputs[key], repeats=per_round, warmup=settings.warmup)
            bar.update()
    bar.close()
    stat = settings.unit_statistic
    # a unit faster than its baseline (noise) keeps a token positive time: tables hold positive times only
    return {key: max(summarize(t)[stat] - (summarize(baselines[key])[stat] if baselines[key] else 0.0), 1e-4)
            for key, t in times.items()}


def time_subnets(net: nn.Module, archs: list, settings: ProfileSettings, convert: Converter | None = None
                 ) -> list[float]:
    """Measured batch-1 latency (ms, ``settings.statistic``) of each arch's dense network in deployed form, timed
    in ``settings.rounds`` passes over all archs so a burst of load elsewhere touches only part of each one's runs."""
    models = [prepare_for_inference(net.extract(arch), inplace=True) for arch in archs]
    if convert is not None:
        models = convert(models, [(net.in_chans, a.resolution, a.resolution) for a in archs])
    inputs = [torch.randn(1, net.in_chans, a.resolution, a.resolution) for a in archs]
    times: list[list[float]] = [[] for _ in archs]
    per_round = max(1, settings.subnet_repeats // settings.rounds)
    for _ in range(settings.rounds):
        for i, (model, x) in enumerate(zip(models, inputs)):
            times[i] += time_forward(model, x, repeats=per_round, warmup=settings.warmup)
    return [summarize(t)[settings.statistic] for t in times]


def spread_archs(net: nn.Module, table: LatencyTable, count: int, rng: random.Random) -> list:
    """``count`` archs spread evenly over the range of summed unit times (from 8x as many random ones, with the
    smallest and largest): random archs bunch in the middle, and the search lands at the ends too."""
    pool = sorted((net.space.sample(rng) for _ in range(8 * count)),
                  key=lambda a: table.sum_units(net.plan.static_spec(a)))
    inner = [pool[round(i)] for i in np.linspace(0, len(pool) - 1, count)[1:-1]]
    return [net.space.smallest(), *inner, net.space.largest()]  # the ends by arch, not by (noisy) unit sums


def robust_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Theil-Sen fit: the median of the pairwise slopes, then the median offset. A least-squares line on a
    handful of timings is tilted by one slow run (a noisy neighbour); the medians ignore it."""
    i, j = np.triu_indices(len(x), k=1)
    keep = x[j] != x[i]
    slope = float(np.median((y[j] - y[i])[keep] / (x[j] - x[i])[keep])) if keep.any() else 0.0
    return slope, float(np.median(y - slope * x))


def mape(predicted: list[float], measured: list[float]) -> float:
    p, m = np.asarray(predicted), np.asarray(measured)
    return float(np.mean(np.abs(p - m) / m) * 100)


def profile(supernet: str | nn.Module, device: str | None = None, settings: ProfileSettings | None = None,
            threads: int | None = None, seed: int = 0, out: str | os.PathLike | None = None,
            progress: bool = True, int8: bool = False) -> LatencyTable:
    """Time every unit of ``supernet``'s space on this machine and return (and optionally save) the table.

    ``supernet`` is a registered name, a saved supernet (``.safetensors`` or run directory) or a module. With
    ``int8``, everything is timed as a statically quantized onnxruntime model (``ofa deploy --int8``'s form).
    """
    convert, backend = None, {"runtime": "torch", "precision": "float32"}
    if int8:
        from .quantize import QuantSettings, ort_converter, require_int8_packages

        require_int8_packages()
        import onnxruntime

        convert = ort_converter(int8=True)
        backend = {"runtime": "onnxruntime", "precision": "int8", "onnxruntime": onnxruntime.__version__,
                   "quantization": QuantSettings().to_dict()}
    settings = settings or ProfileSettings()
    net = _supernet(supernet).eval()
    device = device or platform.node() or "this-device"
    rng = random.Random(seed)
    with num_threads(threads) as used, torch.inference_mode():
        torch.manual_seed(seed)
        units = distinct_units(net)
        table = LatencyTable(device, time_units(units, net.family, settings, seed, progress, convert))
        n_fit, count = settings.fit_subnets, settings.fit_subnets + settings.eval_subnets
        archs = spread_archs(net, table, count, rng)
        measured = time_subnets(net, archs, settings, convert)
    summed = np.array([table.sum_units(net.plan.static_spec(a)) for a in archs])
    measured_ = np.array(measured)
    fit = np.zeros(count, dtype=bool)
    fit[np.linspace(0, count - 1, n_fit).round().astype(int)] = True  # both sets spread over the whole range
    scale, offset = robust_line(summed[fit], measured_[fit])
    accuracy = {"fit_subnets": n_fit, "eval_subnets": count - n_fit,
                "mape_sum_pct": mape(summed[~fit], measured_[~fit]),
                "mape_corrected_pct": mape(scale * summed[~fit] + offset, measured_[~fit]),
                "measured_ms_range": [min(measured), max(measured)]}
    use_linear = accuracy["mape_corrected_pct"] < accuracy["mape_sum_pct"] and scale > 0
    if use_linear:  # the held-out figure is reported; the table keeps the fit on every measured subnet
        scale, offset = robust_line(summed, measured_)
        # never keep a line that predicts <= 0 inside the measured range
        use_linear = scale > 0 and scale * summed.min() + offset > 0
    table.correction = ({"kind": "linear", "scale": float(scale), "offset_ms": float(offset)}
                        if use_linear else {"kind": "none"})
    accuracy["used"] = table.correction["kind"]
    accuracy["mape_pct"] = accuracy["mape_corrected_pct"] if use_linear else accuracy["mape_sum_pct"]
    table.meta = {
        "host": platform.node(), "machine": platform.machine(), "processor": platform.processor(),
        "torch": torch.__version__.split("+")[0], "threads": used, "batch": 1, "statistic": settings.statistic,
        "unit_statistic": settings.unit_statistic, **backend,
        "form": ("int8 ONNX model (QDQ, per-channel weights; ofa deploy --int8's form) in onnxruntime" if int8 else
                 "dense network, BatchNorm folded, channels-last weights (deploy.load's form)"),
        "settings": settings.__dict__,
        "supernet": {"name": net.name, "family": net.family, "config": net.config},
        "accuracy": accuracy,
        "validation": [{"arch": a.to_dict(), "sum_ms": float(s), "measured_ms": m, "fit": bool(f)}
                       for a, s, m, f in zip(archs, summed, measured, fit)],
    }
    if out is not None:
        table.save(out)
    return table
