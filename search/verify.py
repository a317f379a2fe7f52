"""Latency budgets that hold: a latency-budgeted choice is timed in its deployed form before it is kept.

The search lands on the edge of its budget by design, so any error of the latency table (or noise) would put the
chosen subnet over it. When the search runs on the host the device's table was made on, every latency-budgeted
choice is therefore extracted, BN-folded and made channels-last (what ``ofa deploy`` ships), timed at batch 1 at
the table's thread count, and kept only if the 95% upper bound of its median latency is within the budget;
otherwise the next candidate (in the re-ranked order) is timed, then the best archs the search found predicted at
95%, 90%, 85%, 80% and 70% of the budget (a table that is a few percent optimistic near the budget is absorbed
there). The median is the statistic tables predict and deploy reports.

An int8 device is not timed here: its deployed form is a quantized onnxruntime model that only ``ofa deploy``
builds (quantization needs ``deploy``, which the search does not import). Its budget holds by the int8 table's
prediction, and ``ofa deploy`` reports the int8 model's measured median against the budget.
"""

from __future__ import annotations

import math
import platform
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ofa import Arch, OFAError
from ofa.fold import prepare_for_inference
from ofa.timing import num_threads, summarize, time_forward

from .genes import is_contained

# (deployed network, batch-1 input) -> wall times in ms; tests pass a fake one
Timer = Callable[[nn.Module, torch.Tensor], list[float]]


@dataclass
class LatencyCheck:
    arch: Arch
    budget_ms: float
    predicted_ms: float
    median_ms: float
    p10_ms: float
    p90_ms: float
    median_upper_ms: float  # 95% upper confidence bound of the median
    repeats: int
    threads: int
    passed: bool

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "arch"} | {"arch_key": self.arch.key()}


def median_upper_bound(times: Sequence[float]) -> float:
    """A distribution-free 95% upper confidence bound of the median: the order statistic of rank
    n/2 + 1.96 sqrt(n)/2 (binomial normal approximation)."""
    ordered = sorted(times)
    n = len(ordered)
    return ordered[min(n - 1, math.ceil(n / 2 + 1.96 * math.sqrt(n) / 2) - 1)]


def default_timer(repeats: int = 40, warmup: int = 5) -> Timer:
    return lambda model, x: time_forward(model, x, repeats=repeats, warmup=warmup)


def check_latency(net, arch: Arch, budget_ms: float, predicted_ms: float, threads: int, timer: Timer) -> LatencyCheck:
    """Time ``arch`` of ``net`` in its deployed form at batch 1 and compare it with ``budget_ms``."""
    model = prepare_for_inference(net.extract(arch))
    x = torch.randn(1, net.in_chans, arch.resolution, arch.resolution)
    with num_threads(threads) as used, torch.inference_mode():
        times = timer(model, x)
    stats = summarize(times)
    upper = median_upper_bound(times)
    return LatencyCheck(arch, budget_ms, predicted_ms, stats["median_ms"], stats["p10_ms"], stats["p90_ms"], upper,
                        len(times), used, upper <= budget_ms)


def first_within_budget(net, candidates: Sequence[Arch], budget_ms: float, predict: Callable[[Arch], float],
                        threads: int, timer: Timer) -> tuple[LatencyCheck | None, list[LatencyCheck]]:
    """Time the candidates in order until one measures within the budget; (that one or None, every check)."""
    checks = []
    for arch in candidates:
        checks.append(check_latency(net, arch, budget_ms, predict(arch), threads, timer))
        if checks[-1].passed:
            return checks[-1], checks
    return None, checks


# A session check re-anchors a table made on this host when the host now runs its reference subnets this much
# slower than the table predicts. Only slower: a snapshot taken while the machine runs fast (this VM moves between
# speed modes within minutes) would let the search pick larger subnets that then measure over budget once it slows
# again (measured: a 0.69x snapshot put 5 of 10 ResNet picks over budget), while a slow snapshot only makes the
# picks more cautious.
SESSION_DRIFT = 0.05
SESSION_REFERENCES = 7  # the smallest, the largest and 5 seeded random subnets


def session_scale(net, table, threads: int, timer: Timer) -> dict:
    """How fast this host runs now against ``table``: the median of measured / predicted over reference subnets
    timed in deployed form (the statistic the table predicts), with the range of those ratios."""
    rng = random.Random(0)
    archs = [net.space.smallest(), net.space.largest()]
    archs += [net.space.sample(rng) for _ in range(SESSION_REFERENCES - 2)]
    ratios = [c.median_ms / c.predicted_ms for c in
              (check_latency(net, a, math.inf, table.predict(net, a), threads, timer) for a in archs)]
    return {"host": platform.node(), "references": len(archs), "threads": threads,
            "measured_over_predicted": statistics.median(ratios), "range": [min(ratios), max(ratios)]}


def recalibrate(tables: dict, net, timer: Timer, say: Callable[[str], None]) -> dict:
    """The latency tables, each one made on this host (float32: the form searched and timed here) rescaled to
    this session's speed when the host runs more than SESSION_DRIFT slower than it profiled. Tables of other
    hosts and int8 tables are kept as they are: only the device itself can time those."""
    out = {}
    for key, table in tables.items():
        if table.precision == "float32" and table.meta.get("host") == platform.node():
            threads = int(table.meta.get("threads") or torch.get_num_threads())
            session = session_scale(net, table, threads, timer)
            ratio = session["measured_over_predicted"]
            if ratio > 1 + SESSION_DRIFT:
                say(f"latency table {key!r}: this host now runs its reference subnets {ratio:.2f}x slower than "
                    "the table predicts (its speed drifted since profiling); predictions rescaled for this search")
                table = table.rescaled(ratio, session)
        out[key] = table
    return out


LADDER = (0.95, 0.9, 0.85, 0.8, 0.7)  # fractions of a latency budget the fallbacks are predicted at


def latency_ladder(result, budget, costs) -> list:
    """The best-scored arch a search found (``result``: an EvolutionResult) predicted within each LADDER fraction
    of ``budget``'s latency limit (and within its other limits): where to fall back when the table predicts the
    deployed network too fast near the budget. Empty for a budget without a latency limit."""
    if budget.latency_ms is None:
        return []
    ladder = []
    for f in LADDER:
        best = result.best(lambda a, f=f: costs.fits(a, budget) and
                           costs.cost(a, "latency_ms", budget.latency_key) <= f * budget.latency_ms)
        if best is not None and all(best.arch != e.arch for e in ladder):
            ladder.append(best)
    return ladder


def verify_choices(choices: Sequence, net, costs, predictor, metric: str, nested: bool, timer: Timer,
                   say: Callable[[str], None], strict: bool = True) -> bool:
    """Keep a latency-budgeted choice only if it measures within its budget in deployed form; otherwise take the
    next re-ranked candidate that does (inside the next larger choice with --nested). Largest first, so that a
    nested chain's parent is settled before its child. When no candidate fits: an error, or with ``strict=False``
    a warning, keeping the fastest measured candidate (marked ``passed: false``). A choice already checked as it
    is is not timed again. Returns True if a choice was replaced (a nested chain below it must then be re-nested)."""
    host, changed = platform.node(), False
    for i in range(len(choices) - 1, -1, -1):
        c, b = choices[i], choices[i].budget
        if b.latency_ms is None or (c.latency is not None and c.latency.get("arch_key") == c.arch.key()):
            continue
        table = costs.tables[b.latency_key]
        if b.precision != "float32":
            c.latency = {"verified": False, "why": f"a device running {b.precision}: `ofa deploy` times its "
                                                   "quantized model in onnxruntime and reports it against the budget"}
            continue
        if table.meta.get("host") != host:
            c.latency = {"verified": False, "why": f"the {b.latency_device!r} latency table was made on host "
                                                   f"{table.meta.get('host')!r}, not this one: `ofa deploy` on the "
                                                   "device measures the deployed subnet"}
            continue
        ranked = sorted(c.candidates, key=lambda em: (
            -np.inf if em[1] is None else -predictor.better(getattr(em[1], metric)), -em[0].score))
        scores = {e.arch: e.score for e in [e for e, _ in c.candidates] + c.ladder}
        ordered = list(dict.fromkeys([c.arch] + [e.arch for e, _ in ranked] + [e.arch for e in c.ladder]))
        if nested and i + 1 < len(choices):
            ordered = [a for a in ordered if is_contained(a, choices[i + 1].arch)]
        threads = int(table.meta.get("threads") or torch.get_num_threads())
        kept, checks = first_within_budget(net, ordered, b.latency_ms,
                                           lambda a, d=b.latency_key: costs.cost(a, "latency_ms", d), threads,
                                           timer)
        if not checks:
            raise OFAError(f"device {b.name!r}: no candidate is contained in the subnet kept for the next larger "
                           "device after its latency check; search without --nested or raise the budget")
        if kept is None:
            fastest = min(checks, key=lambda ch: ch.median_ms)
            message = (f"device {b.name!r}: none of the {len(checks)} candidates tried runs within "
                       f"latency_ms={b.latency_ms:g} on this host in deployed form ({threads} threads); the "
                       f"fastest measured {fastest.median_ms:.3f} ms (median, 95% bound "
                       f"{fastest.median_upper_ms:.3f} ms; the table predicted {fastest.predicted_ms:.3f} ms): "
                       "raise the budget, or re-profile the table with `ofa profile` on an otherwise idle machine")
            if strict:
                raise OFAError(message)
            say(f"warning: {message}; keeping the fastest measured candidate")
            kept = fastest
        if kept.arch != c.arch:
            say(f"{b.name}: the chosen subnet measured {checks[0].median_ms:.3f} ms (95% bound "
                f"{checks[0].median_upper_ms:.3f} ms) for a {b.latency_ms:g} ms budget: took the next candidate, "
                f"{kept.median_ms:.3f} ms")
            c.arch, changed = kept.arch, True
            c.predicted = predictor.better(scores[kept.arch]) if kept.arch in scores else c.predicted
        c.latency = {"verified": True, "host": host, **kept.to_dict(), "fallbacks": len(checks) - 1,
                     "checks": [ch.to_dict() for ch in checks]}
    return changed
