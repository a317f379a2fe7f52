"""``ofa search RUN``: accuracy table -> predictor -> NSGA-II per device budget -> test measurement -> files.

Writes into RUN/search/: accuracy_table.csv, predictor.safetensors + predictor.json, search_log.csv (best value
per generation), pareto.csv, pareto.png, selected.json (contract 4: what deploy reads) and report.json.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

import ofa
from ofa import Arch, OFAError
from ofa.rundir import RunDir

from .budgets import Budget, CostModel, load_latency_tables
from .config import SearchConfig
from .effort import Effort
from .evolution import Evaluated, EvolutionResult, SharedScores, evolve, pareto_front
from .genes import GeneSpace, is_contained
from .modes import SEARCH_MODES
from .objectives import ConstrainedObjective, Objective
from .outputs import write_outputs
from .predictor import PREDICTORS, Predictor, fit_predictor
from .record import record_search
from .selection import check_merge, refuse_chance_level
from .table import default_storage, measure_arch, open_storage, read_table, write_table_csv
from .verify import default_timer, latency_ladder, recalibrate, verify_choices
from .workers import check_workers, measure_device, measure_with_workers


@dataclass
class Choice:
    budget: Budget
    arch: Arch
    predicted: float
    measured: ofa.Metrics | None = None
    independent: Arch | None = None  # with --nested: the arch chosen without the nesting constraint
    independent_predicted: float | None = None
    independent_measured: ofa.Metrics | None = None
    seconds: float = 0.0
    candidates: list[tuple[Evaluated, ofa.Metrics | None]] = field(default_factory=list)  # re-ranked on val
    latency: dict | None = None  # a latency budget's check in deployed form (search.verify)
    # a latency budget's fallbacks beyond the re-ranked candidates: the best archs predicted at 95%, 90%, ... of it
    ladder: list[Evaluated] = field(default_factory=list)


@dataclass
class SearchOutcome:
    choices: list[Choice]  # smallest budget first
    predictor: Predictor
    table: list[dict]
    out_dir: Path


def _say(cfg: SearchConfig, msg: str) -> None:
    if cfg.progress:
        print(msg, flush=True)


def search(cfg: SearchConfig, net=None, data=None) -> SearchOutcome | list[dict]:
    """Run the whole search (or only the measurement with ``cfg.measure_only``, returning the table rows)."""
    run = Path(cfg.run_dir)
    if not run.is_dir():
        raise OFAError(f"run directory {run} does not exist; train one with `ofa train --out {run}`")
    paths = RunDir(run)
    if net is None:
        net = ofa.load(paths.supernet)
    if not cfg.measure_only and not cfg.budgets:
        raise OFAError("no budget given: pass --budget macs=40M (or params=0.3M, latency_ms=5@DEVICE) or "
                       "--devices devices.yaml")
    names = [b.name for b in cfg.budgets]
    if len(set(names)) != len(names):
        raise OFAError(f"device names must be unique, got {names}")
    if not cfg.measure_only:
        check_merge(paths.selection, names, cfg.nested, cfg.replace)
    storage = cfg.storage or default_storage(run)
    check_workers(cfg.workers, storage)
    measure_device(cfg.measure_device)
    tables = load_latency_tables(cfg.budgets, run, cfg.luts)
    # re-anchor this host's tables when the search times here at all, on a real clock (tests script theirs)
    if cfg.verify_latency and cfg.latency_timer is None and not cfg.measure_only:
        tables = recalibrate(tables, net, default_timer(), lambda m: _say(cfg, m))
    costs = CostModel(net, tables)
    costs.check_feasible(cfg.budgets)  # before any expensive work
    if data is None:
        from ofa.data import load_run_data

        data = load_run_data(run)

    _say(cfg, f"accuracy table: {cfg.table_size} subnets on {storage} ({cfg.workers} worker(s))")
    measure_with_workers(cfg, net, data, storage)
    rows = read_table(storage)
    write_table_csv(rows, paths.accuracy_table)
    _say(cfg, f"wrote {paths.accuracy_table} ({len(rows)} measured subnets)")
    if cfg.measure_only:
        return rows

    archs = [net.space.arch_from_json(r["arch"]) for r in rows]
    genes = GeneSpace(net.space)
    predictor = _fit(cfg, genes, archs, rows, paths.predictor)

    # one cache for every budget: a sweep over many budgets scores each distinct arch once
    score = SharedScores(lambda batch: np.array([predictor.better(v) for v in predictor.predict(batch)]))

    best_measured = sorted(zip(archs, rows), key=lambda ar: -predictor.better(ar[1][cfg.metric]))
    log_rows: list[dict] = []
    choices: list[Choice] = []
    pool: dict[Arch, float] = {}  # every arch any search scored, with its score (for the front)
    mode = SEARCH_MODES[cfg.mode](cfg, costs, partial(_evolve, cfg, genes, score, log_rows), log_rows)
    for b in cfg.budgets:
        t0 = time.perf_counter()
        measured = [a for a, _ in best_measured if costs.fits(a, b)][:10]
        res, top = mode.candidates(b, [net.space.largest(), net.space.smallest()] + measured)
        if not top:
            raise OFAError(f"device {b.name!r}: the search found no subnet within {b.describe()}; "
                           "raise --generations or the budget")
        best, candidates = _rerank(cfg, net, data, top, predictor)
        pool.update({a: e.score for a, e in res.evaluated.items()})
        choices.append(Choice(b, best.arch, predictor.better(best.score), seconds=time.perf_counter() - t0,
                              candidates=candidates, ladder=latency_ladder(res, b, costs)))
        _say(cfg, f"{b.name}: predicted {cfg.metric} {choices[-1].predicted:.4f} at "
                  f"{_cost_text(costs, best.arch, b)} ({choices[-1].seconds:.1f}s)")

    choices.sort(key=lambda c: (net.costs(c.arch)[0], c.budget.name))
    if cfg.nested:
        _nest(cfg, genes, score, costs, choices, predictor, log_rows, data)
    if cfg.verify_latency:
        _check_latency(cfg, genes, score, costs, choices, predictor, log_rows, data)
    if cfg.measure_test:
        for c in choices:
            c.measured = measure_arch(net, data, c.arch, cfg.calib_batches, cfg.batch_size, "test", cfg.test_limit)
            if c.independent is not None and c.independent != c.arch:
                c.independent_measured = measure_arch(net, data, c.independent, cfg.calib_batches,
                                                      cfg.batch_size, "test", cfg.test_limit)
            elif c.independent is not None:
                c.independent_measured = c.measured
        for name in refuse_chance_level({c.budget.name: c.measured for c in choices}, net.num_classes, cfg.force):
            print(f"WARNING: {name} is at chance level; written anyway (--force)", file=sys.stderr)
    front = _fronts(cfg, pool, costs, predictor)
    record_search(open_storage(storage, None, None), genes, costs, choices, front, predictor, cfg.metric)
    write_outputs(cfg, paths, net, costs, choices, predictor, rows, front, log_rows)
    return SearchOutcome(choices, predictor, rows, paths.search)


def _rerank(cfg: SearchConfig, net, data, top: list[Evaluated], predictor
            ) -> tuple[Evaluated, list[tuple[Evaluated, ofa.Metrics | None]]]:
    """Of the best predicted candidates, keep the one that measures best on validation (the predictor ranks
    well but is noisy between near-equal archs; a few real measurements settle it). rerank=1: trust it.
    Returns the kept one and every candidate with its validation metrics (None when not measured)."""
    if len(top) <= 1 or cfg.rerank <= 1:
        return top[0], [(e, None) for e in top]
    measured = [(e, measure_arch(net, data, e.arch, cfg.calib_batches, cfg.batch_size, "val", cfg.val_limit))
                for e in top]
    best = max(measured, key=lambda em: (predictor.better(getattr(em[1], cfg.metric)), em[0].score))[0]
    return best, measured


def _fit(cfg: SearchConfig, genes: GeneSpace, archs, rows, path: Path) -> Predictor:
    targets = [r[cfg.metric] for r in rows]
    predictor = fit_predictor(genes, archs, targets, family=cfg.predictor, metric=cfg.metric, seed=cfg.seed,
                              epochs=cfg.predictor_epochs)
    h = predictor.held_out
    _say(cfg, f"predictor {cfg.predictor} ({cfg.metric}) on {h['n']} held-out subnets: RMSE {h['rmse']:.4f} "
              f"Spearman {h['spearman']:.3f} Kendall tau {h['kendall_tau']:.3f}")
    comparison = {cfg.predictor: h}
    if cfg.compare_predictors:
        for family in PREDICTORS:
            if family in comparison:  # the chosen one, fitted above
                continue
            other = fit_predictor(genes, archs, targets, family=family, metric=cfg.metric, seed=cfg.seed,
                                  epochs=cfg.predictor_epochs, refit_all=False)
            comparison[family] = o = other.held_out
            _say(cfg, f"predictor {family}: RMSE {o['rmse']:.4f} Spearman {o['spearman']:.3f} "
                      f"Kendall tau {o['kendall_tau']:.3f}")
    predictor.held_out = dict(h, comparison=comparison)
    predictor.save(path)
    return predictor


def _evolve(cfg, genes, score, log_rows, label: str, seeds: list[Arch], objective: Objective, size: Effort,
            history: bool = True) -> EvolutionResult:
    """One evolution at ``size``; with ``history`` its best score per generation goes to search_log.csv."""
    res = evolve(genes, score, generations=size.generations, population=size.population, objective=objective,
                 seeds=seeds, seed=cfg.seed, mutation_prob=cfg.mutation_prob, crossover_prob=cfg.crossover_prob,
                 stage_crossover=size.stage_crossover, log=(lambda m: _say(cfg, "  " + m)), label=f"{label}: ")
    if history:
        log_rows += [{"search": label, "generation": g + 1, "trials": (g + 1) * size.population,
                      "best_predicted": v} for g, v in enumerate(res.history)]
    return res


def _nest(cfg, genes, score, costs, choices: list[Choice], predictor, log_rows, data) -> None:
    """Re-choose top-down so each arch is contained in the next larger one (the largest keeps its choice).
    Called again after a latency check replaced a choice: only what no longer nests is searched again."""
    for c in choices:
        if c.independent is None:
            c.independent, c.independent_predicted = c.arch, c.predicted
    for i in range(len(choices) - 2, -1, -1):
        c, parent = choices[i], choices[i + 1].arch
        if is_contained(c.arch, parent):
            continue
        inner = genes.contained_in(parent)
        seeds = [parent] + [x.arch for x in choices[:i + 1]]
        res = _evolve(cfg, inner, score, log_rows, f"nested:{c.budget.name}", seeds,
                      ConstrainedObjective(lambda a, b=c.budget: costs.violations(a, b)), cfg.search_size())
        top = res.top(cfg.rerank)
        best, candidates = _rerank(cfg, costs.net, data, top, predictor) if top else (None, [])
        if best is None:
            raise OFAError(f"--nested: no subnet of {c.budget.name!r}'s budget ({c.budget.describe()}) fits inside "
                           f"the arch chosen for {choices[i + 1].budget.name!r}")
        c.arch, c.predicted, c.candidates = best.arch, predictor.better(best.score), candidates
        c.ladder = latency_ladder(res, c.budget, costs)


def _check_latency(cfg, genes, score, costs: CostModel, choices: list[Choice], predictor, log_rows, data) -> None:
    """Time the latency-budgeted choices in deployed form (search.verify); a replaced choice may break a nested
    chain below it, which is then re-nested and its new members checked (up to 3 rounds)."""
    for _ in range(3):
        changed = verify_choices(choices, costs.net, costs, predictor, cfg.metric, cfg.nested,
                                 cfg.latency_timer or default_timer(), lambda m: _say(cfg, m), cfg.strict_latency)
        if not (changed and cfg.nested):
            break
        _nest(cfg, genes, score, costs, choices, predictor, log_rows, data)
    for c in choices:  # re-chosen by the last re-nesting after its check (rare): say it was not timed as it is
        if c.latency is not None and c.latency.get("verified") and c.latency.get("arch_key") != c.arch.key():
            c.latency = {"verified": False, "why": "re-chosen inside the next larger device after its latency check"}


def _fronts(cfg, pool, costs: CostModel, predictor) -> list[dict]:
    kinds = sorted({(b.primary(), b.latency_key if b.primary() == "latency_ms" else None) for b in cfg.budgets}
                   | {("macs", None)}, key=lambda k: (k[0], k[1] or ""))
    rows = []
    for kind, device in kinds:
        points = [(costs.cost(a, kind, device), s, a) for a, s in pool.items()]
        for cost, s, a in pareto_front(points):
            macs, params = costs.net.costs(a)
            rows.append({"cost_kind": kind if device is None else f"{kind}@{device}", "cost": cost, "macs": macs,
                         "params": params, "predicted": predictor.better(s), "key": a.key(), "arch": a})  # CSV: str(a) is its JSON
    return rows


def _cost_text(costs: CostModel, arch: Arch, b: Budget) -> str:
    macs, params = costs.net.costs(arch)
    text = f"{macs / 1e6:.2f}M MACs {params / 1e6:.3f}M params"
    if b.latency_device is not None:
        text += f" {costs.cost(arch, 'latency_ms', b.latency_key):.2f}ms@{b.latency_key}"
    return text
