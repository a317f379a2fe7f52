"""Timing a network on this machine: warm-up, then the median (and spread) of repeated forward passes.

This is the one timing routine behind latency tables, deploy reports and the benchmark, so all of them
state the same settings (batch, warm-up, repeats, threads).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


def default_threads() -> int:
    """Intra-op threads per process: the cores this process may use, divided among the processes of this machine
    (torchrun's LOCAL_WORLD_SIZE). torch's own default counts every core in every process, so that processes
    side by side oversubscribe the machine (training measured 7.6x slower that way on 2 cores). An
    ``OMP_NUM_THREADS`` in the environment is the user's choice and wins."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


@contextlib.contextmanager
def num_threads(threads: int | None) -> Iterator[int]:
    """Run with ``threads`` intra-op threads (None: leave as is); restores the previous setting."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


@torch.inference_mode()
def time_forward(model: nn.Module, x: torch.Tensor, repeats: int = 30, warmup: int = 5) -> list[float]:
    """Wall times (ms) of ``repeats`` forward passes of ``model`` on ``x``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def summarize(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {"median_ms": statistics.median(ordered), "p10_ms": q(0.1), "p90_ms": q(0.9), "min_ms": ordered[0]}


def measure_latency(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1, repeats: int = 30,
                    warmup: int = 5, threads: int | None = None) -> dict[str, float | int]:
    """Median latency (ms) of ``model`` on a random batch of ``input_shape`` (C, H, W), with the settings used."""
    model.eval()
    x = torch.randn(batch, *input_shape)
    with num_threads(threads) as used:
        times = time_forward(model, x, repeats=repeats, warmup=warmup)
    return {**summarize(times), "batch": batch, "warmup": warmup, "repeats": repeats, "threads": used}


def measure_latency_checked(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1,
                            predicted_ms: float | None = None, tries: int = 3, max_spread: float = 1.5,
                            **settings) -> dict[str, Any]:
    """``measure_latency``, measured again while the figure disagrees with itself (p90 above ``max_spread`` x
    p10: something else ran meanwhile) or with ``predicted_ms`` (off by more than 2x). The steadiest try is kept;
    one that stays unsteady says so (``unstable``: why) instead of passing as a measurement."""
    tried: list[tuple[float, dict, list[str]]] = []
    while len(tried) < tries and (not tried or tried[-1][2]):
        m = measure_latency(model, input_shape, batch=batch, **settings)
        spread = m["p90_ms"] / max(m["p10_ms"], 1e-9)
        off = None if predicted_ms is None else m["median_ms"] / predicted_ms
        problems = ([f"p90/p10 {spread:.2f} > {max_spread}"] if spread > max_spread else []) + (
            [f"{off:.2f}x the table's {predicted_ms:.3f} ms"] if off is not None and not 0.5 <= off <= 2 else [])
        tried.append((spread, m, problems))
    _, m, problems = min(tried, key=lambda t: (bool(t[2]), t[0]))
    return {**m, "tries": len(tried), **({"unstable": "; ".join(problems)} if problems else {})}


@torch.inference_mode()
def time_pair(a: nn.Module, b: nn.Module, x: torch.Tensor, repeats: int = 30,
              warmup: int = 5) -> tuple[list[float], list[float]]:
    """Wall times (ms) of ``a`` and ``b`` on ``x``, interleaved (the order alternating), so that both see the same
    machine load: the fair way to compare two networks."""
    for _ in range(warmup):
        a(x), b(x)
    times_a, times_b = [], []
    for i in range(repeats):
        for model, times in ((a, times_a), (b, times_b)) if i % 2 == 0 else ((b, times_b), (a, times_a)):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
    return times_a, times_b
