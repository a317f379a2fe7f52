"""What a search leaves in RUN/search/ (selected.json is what `ofa deploy` reads) and the table it prints."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

import ofa
from ofa.io import atomic_write
from ofa.rundir import RunDir, SearchReport, SelectedDevice, Selection

from .budgets import CostModel
from .selection import merge

if TYPE_CHECKING:
    from .run import Choice, SearchConfig


def _measured(m: ofa.Metrics | None) -> dict | None:
    if m is None:
        return None
    return {"split": "test", "top1": m.top1, "ci_low": m.ci_low, "ci_high": m.ci_high, "loss": m.loss,
            "n": m.total}


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def write_outputs(cfg: SearchConfig, run: RunDir, net, costs: CostModel, choices: list[Choice], predictor, rows,
                  front, log_rows) -> None:
    """RUN/search/: selected.json (merged with an earlier search's other devices), pareto.csv, search_log.csv,
    report.json and pareto.png; then the summary table."""
    devices = {}
    for c in choices:
        macs, params = net.costs(c.arch)
        latency = costs.cost(c.arch, "latency_ms", c.budget.latency_key) if c.budget.latency_device else None
        devices[c.budget.name] = SelectedDevice(
            budget=c.budget.to_dict(), arch=c.arch.to_dict(), macs=macs, params=params, latency_ms=latency,
            predicted={"metric": cfg.metric, "value": c.predicted}, measured=_measured(c.measured),
            latency_measured=c.latency)
    selection = Selection(supernet=run.supernet.name, nested=bool(cfg.nested),
                          order=[c.budget.name for c in choices], devices=devices)
    merge(run.selection, selection, cfg.replace).write(run.selection)
    _write_csv(run.pareto_csv, front, ["cost_kind", "cost", "macs", "params", "predicted", "key", "arch"])
    _write_csv(run.search_log, log_rows, ["search", "generation", "trials", "best_predicted"])
    size = cfg.search_size()
    report = SearchReport(predictor={"family": predictor.family, "metric": predictor.metric, **predictor.held_out},
                          table_size=len(rows), mode=cfg.mode, effort=cfg.effort, generations=size.generations,
                          population=size.population, devices=[])
    for c in choices:
        entry = {"device": c.budget.name, "budget": c.budget.describe(), "seconds": c.seconds,
                 "predicted": c.predicted, "measured": _measured(c.measured), "latency": c.latency}
        session = getattr(costs.tables.get(c.budget.latency_key), "meta", {}).get("session")
        if session is not None:  # the table was re-anchored to this session's speed (search.verify.recalibrate)
            entry["latency_session"] = session
        if c.independent is not None:
            entry["independent"] = {"arch": c.independent.to_dict(), "predicted": c.independent_predicted,
                                    "measured": _measured(c.independent_measured)}
            entry["nesting_cost_predicted"] = predictor.better(c.independent_predicted) - predictor.better(
                c.predicted)
            if c.measured is not None and c.independent_measured is not None:
                entry["nesting_cost_test_top1"] = c.independent_measured.top1 - c.measured.top1
        report.devices.append(entry)
    report.write(run.search_report)
    from .plot import plot_pareto

    plot_pareto(run.pareto_png, rows, front, choices, cfg.metric, net)
    _print_summary(cfg, choices, net)


def _print_summary(cfg: SearchConfig, choices: list[Choice], net) -> None:
    if not cfg.progress:
        return
    print(f"\n{'device':<16}{'budget':<28}{'MACs':>9}{'params':>9}  predicted {cfg.metric:<5} test top-1 [95% CI]")
    for c in choices:
        macs, params = net.costs(c.arch)
        m = c.measured
        test = f"{m.top1:.2f} [{m.ci_low:.2f}, {m.ci_high:.2f}]" if m else "-"
        print(f"{c.budget.name:<16}{c.budget.describe():<28}{macs / 1e6:8.2f}M{params / 1e6:8.3f}M  "
              f"{c.predicted:15.3f}  {test}")
        if c.latency is not None and c.latency.get("verified"):
            lat = c.latency
            print(f"{'':<16}latency: predicted {lat['predicted_ms']:.3f} ms, measured {lat['median_ms']:.3f} ms "
                  f"[{lat['p10_ms']:.3f}, {lat['p90_ms']:.3f}] deployed ({lat['threads']} threads), budget "
                  f"{lat['budget_ms']:g} ms" + (f"; {lat['fallbacks']} over-budget candidate(s) skipped"
                                                if lat["fallbacks"] else "")
                  + ("" if lat["passed"] else "; OVER BUDGET (no candidate measured within it)"))
        elif c.latency is not None:
            print(f"{'':<16}latency: not measured here ({c.latency['why']})")
        if c.independent is not None and c.independent != c.arch:
            im = c.independent_measured
            print(f"{'':<16}independent choice: predicted {c.independent_predicted:.3f}"
                  + (f", test {im.top1:.2f}" if im else "") + " (nesting cost)")
