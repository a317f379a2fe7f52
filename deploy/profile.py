"""``ofa profile``: make a latency table on the device it runs on, and measure how well it predicts.

Every distinct unit the search space can produce (its family's: stem, blocks, head) is built as the deployed
network runs it (plain layers, BatchNorm folded, channels-last weights) and timed at batch 1 (the median of runs
spread over several shuffled passes, so that a burst of load elsewhere touches few of any unit's runs). Then whole random subnets are extracted, folded
and timed: a linear correction ``measured = scale * sum + offset`` is fitted on one set and the table's error
(mean absolute percentage error) is reported on another, held-out set, for the plain sum and the corrected sum.
The correction is kept only when it is more accurate on the held-out subnets; the table says which is used.
"""

from __future__ import annotations

import os
import platform
import random
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
from ofa.timing import num_threads, summarize, time_forward


@dataclass(frozen=True)
class ProfileSettings:
    repeats: int = 24        # timed runs per unit (split over `rounds` passes over all units)
    rounds: int = 3          # passes over all units (shuffled) and subnets, so a burst of load skews few runs
    warmup: int = 3
    fit_subnets: int = 20    # whole subnets the correction is fitted on
    eval_subnets: int = 30   # held-out whole subnets the accuracy is reported on
    subnet_repeats: int = 24
    # The median: what a latency budget bounds and what deploy reports (one statistic end to end). A low percentile
    # was steadier under background load, but it predicted a faster network than the one that gets deployed.
    statistic: str = "median_ms"

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
            path = path / "supernet.safetensors"
        return ofa.load(path)
    return ofa.create_supernet(str(supernet))


def time_units(units: dict[str, dict[str, Any]], family: str, settings: ProfileSettings, seed: int = 0,
               progress: bool = True) -> dict[str, float]:
    """Batch-1 time (ms, ``settings.statistic``) of every unit, measured over ``settings.rounds`` shuffled passes."""
    built = {key: build_unit(unit, family) for key, unit in units.items()}
    inputs = {key: torch.randn(1, *shape) for key, (_, shape) in built.items()}
    times: dict[str, list[float]] = {key: [] for key in units}
    rng = random.Random(seed)
    per_round = max(1, settings.repeats // settings.rounds)
    order = list(units)
    bar = tqdm(total=len(order) * settings.rounds, desc="timing units", disable=not progress, leave=False)
    for _ in range(settings.rounds):
        rng.shuffle(order)
        for key in order:
            times[key] += time_forward(built[key][0], inputs[key], repeats=per_round, warmup=settings.warmup)
            bar.update()
    bar.close()
    return {key: summarize(t)[settings.statistic] for key, t in times.items()}


def time_subnets(net: nn.Module, archs: list, settings: ProfileSettings) -> list[float]:
    """Measured batch-1 latency (ms, ``settings.statistic``) of each arch's dense network in deployed form, timed
    in ``settings.rounds`` passes over all archs so a burst of load elsewhere touches only part of each one's runs."""
    models = [prepare_for_inference(net.extract(arch), inplace=True) for arch in archs]
    inputs = [torch.randn(1, net.in_chans, a.resolution, a.resolution) for a in archs]
    times: list[list[float]] = [[] for _ in archs]
    per_round = max(1, settings.subnet_repeats // settings.rounds)
    for _ in range(settings.rounds):
        for i, (model, x) in enumerate(zip(models, inputs)):
            times[i] += time_forward(model, x, repeats=per_round, warmup=settings.warmup)
    return [summarize(t)[settings.statistic] for t in times]


def mape(predicted: list[float], measured: list[float]) -> float:
    p, m = np.asarray(predicted), np.asarray(measured)
    return float(np.mean(np.abs(p - m) / m) * 100)


def profile(supernet: str | nn.Module, device: str | None = None, settings: ProfileSettings | None = None,
            threads: int | None = None, seed: int = 0, out: str | os.PathLike | None = None,
            progress: bool = True) -> LatencyTable:
    """Time every unit of ``supernet``'s space on this machine and return (and optionally save) the table.

    ``supernet`` is a registered name, a saved supernet (``.safetensors`` or run directory) or a module.
    """
    settings = settings or ProfileSettings()
    net = _supernet(supernet).eval()
    device = device or platform.node() or "this-device"
    rng = random.Random(seed)
    with num_threads(threads) as used, torch.inference_mode():
        torch.manual_seed(seed)
        units = distinct_units(net)
        table = LatencyTable(device, time_units(units, net.family, settings, seed, progress))
        archs = [net.space.sample(rng) for _ in range(settings.fit_subnets + settings.eval_subnets)]
        measured = time_subnets(net, archs, settings)
    summed = [table.sum_units(net.plan.static_spec(a)) for a in archs]
    n_fit = settings.fit_subnets
    scale, offset = np.polyfit(summed[:n_fit], measured[:n_fit], 1)
    corrected = [scale * s + offset for s in summed[n_fit:]]
    accuracy = {"fit_subnets": n_fit, "eval_subnets": len(archs) - n_fit,
                "mape_sum_pct": mape(summed[n_fit:], measured[n_fit:]),
                "mape_corrected_pct": mape(corrected, measured[n_fit:]),
                "measured_ms_range": [min(measured), max(measured)]}
    use_linear = accuracy["mape_corrected_pct"] < accuracy["mape_sum_pct"] and scale > 0
    table.correction = ({"kind": "linear", "scale": float(scale), "offset_ms": float(offset)}
                        if use_linear else {"kind": "none"})
    accuracy["used"] = table.correction["kind"]
    accuracy["mape_pct"] = accuracy["mape_corrected_pct"] if use_linear else accuracy["mape_sum_pct"]
    table.meta = {
        "host": platform.node(), "machine": platform.machine(), "processor": platform.processor(),
        "torch": torch.__version__.split("+")[0], "threads": used, "batch": 1, "statistic": settings.statistic,
        "form": "dense network, BatchNorm folded, channels-last weights (deploy.load's form)",
        "settings": settings.__dict__,
        "supernet": {"name": net.name, "family": net.family, "config": net.config},
        "accuracy": accuracy,
        "validation": [{"arch": a.to_dict(), "sum_ms": s, "measured_ms": m}
                       for a, s, m in zip(archs, summed, measured)],
    }
    if out is not None:
        table.save(out)
    return table
