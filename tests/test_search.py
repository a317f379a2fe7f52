"""Search without measuring: gene encoding, predictor quality, constrained NSGA-II, budgets and their errors."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import ofa
from ofa import OFAError, SearchSpace
from search.budgets import CostModel, load_devices, load_latency_tables, parse_budget
from search.evolution import evolve, pareto_front
from search.genes import GeneSpace, is_contained
from search.predictor import Predictor, fit_predictor, kendall_tau


@pytest.fixture(scope="module")
def net():
    return ofa.create_supernet("ofa_resnet_tiny")


def test_encoding_round_trip_and_inactive_blocks_are_zero(net):
    genes = GeneSpace(net.space)
    archs = [net.space.sample(i) for i in range(200)] + [net.space.largest(), net.space.smallest()]
    x = genes.encode(archs)
    assert x.shape == (len(archs), genes.width)
    assert [genes.decode(row) for row in x] == archs
    for a, row in zip(archs, x):  # one slot per active gene, nothing for blocks beyond a stage's depth
        active = 1 + (a.stem is not None) + sum(2 + d for d in a.depths)
        assert row.sum() == active
        for s, d in enumerate(a.depths):
            for b in range(d, net.space.max_depths[s]):
                g = genes[f"expand{s}.{b}"]
                assert not row[genes.offsets[g.name]: genes.offsets[g.name] + len(g.choices)].any()


def test_archs_differing_only_in_inactive_genes_are_one_arch(net):
    genes = GeneSpace(net.space)
    a = net.space.smallest()  # depth 1 everywhere: every second block is inactive
    g1 = genes.genes_from_arch(a)
    g2 = dict(g1, **{f"expand{s}.1": genes[f"expand{s}.1"].choices[-1] for s in range(3)})
    assert g1 != g2
    a1, a2 = genes.arch_from_genes(g1), genes.arch_from_genes(g2)
    assert a1 == a2 == a and a1.key() == a2.key()
    np.testing.assert_array_equal(genes.encode([a1]), genes.encode([a2]))
    g3 = dict(g1, depth0=2)  # the same gene becomes active once the depth reaches it
    assert genes.arch_from_genes(g3).key() != a.key()


def _synthetic_accuracy(net, archs):
    """A known accuracy-like function: log-MACs plus per-stage effects and one interaction."""
    out = []
    for a in archs:
        macs = net.costs(a)[0]
        out.append(50 + 6 * np.log(macs / 1e6) + 4 * a.widths[1] * a.depths[2] - 3 * sum(a.expands[0])
                   + (2.0 if a.resolution == 24 else 0.0))
    return np.array(out)


def test_predictor_fits_a_known_function(net, tmp_path):
    genes = GeneSpace(net.space)
    archs = list({a.key(): a for a in (net.space.sample(i) for i in range(260))}.values())[:250]
    y = _synthetic_accuracy(net, archs)
    p = fit_predictor(genes, archs, y, family="mlp", epochs=60, patience=10, refit_all=False)
    assert p.held_out["kendall_tau"] > 0.9, p.held_out
    assert p.held_out["n"] == 50
    fresh = [net.space.sample(10_000 + i) for i in range(100)]
    assert kendall_tau(p.predict(fresh), _synthetic_accuracy(net, fresh)) > 0.85
    p.save(tmp_path / "predictor.safetensors")
    q = Predictor.load(tmp_path / "predictor.safetensors")
    np.testing.assert_allclose(q.predict(fresh), p.predict(fresh), rtol=1e-6)
    assert q.held_out == p.held_out
    ridge = fit_predictor(genes, archs, y, family="ridge", refit_all=False)  # the second family, by name
    assert ridge.family == "ridge" and 0 < ridge.held_out["kendall_tau"] <= 1
    with pytest.raises(OFAError, match="unknown predictor 'gbm'; allowed"):
        fit_predictor(genes, archs, y, family="gbm")


def _small_space() -> SearchSpace:
    return SearchSpace(resolutions=(16, 20), depths=((1, 2), (1, 2)), widths=((0.5, 1.0), (0.5, 1.0)),
                       expands=((0.5, 1.0), (0.5, 0.75, 1.0)))


def _enumerate(space: SearchSpace):
    for r, d0, d1, w0, w1 in itertools.product(space.resolutions, *space.depths, *space.widths):
        for e0 in itertools.product(space.expands[0], repeat=d0):
            for e1 in itertools.product(space.expands[1], repeat=d1):
                yield space.arch_from_dict({"resolution": r, "depths": [d0, d1], "widths": [w0, w1],
                                            "expands": [list(e0), list(e1)]})


def test_constrained_search_finds_the_enumerable_optimum_and_never_exceeds_the_budget():
    space = _small_space()
    genes = GeneSpace(space)

    def cost(a):  # MACs-like: grows with resolution, width, depth and expand (later blocks cost more)
        return (a.resolution / 16) ** 2 * sum(
            a.widths[s] * sum((1 + 0.2 * b) * (0.5 + e) for b, e in enumerate(a.expands[s])) for s in range(2))

    def value(a):  # accuracy-like, with a penalty so that the costliest feasible arch is not simply the best
        return np.log(cost(a)) + 0.7 * a.widths[0] - 0.4 * (a.depths[1] == 2 and a.expands[1][-1] == 0.75)

    archs = list(_enumerate(space))
    assert len(archs) == space.size() == len({a.key() for a in archs})
    budget = float(np.median([cost(a) for a in archs]))
    feasible = sorted((a for a in archs if cost(a) <= budget), key=value)
    optimum = feasible[-1]
    assert value(feasible[-2]) < value(optimum)  # one known optimum
    res = evolve(genes, lambda batch: np.array([value(a) for a in batch]), generations=30, population=24,
                 violations=lambda a: [cost(a) / budget - 1], seeds=[space.largest(), space.smallest()], seed=1)
    best = res.best()
    assert best.arch == optimum
    assert cost(best.arch) <= budget
    assert all((cost(e.arch) <= budget) == e.feasible for e in res.evaluated.values())
    assert any(not e.feasible for e in res.evaluated.values())  # the largest seed is over budget: excluded
    assert res.history == sorted(res.history)  # best-so-far per generation, logged for convergence
    front = pareto_front([(cost(a), value(a), a) for a in archs])
    assert all(f1[0] < f2[0] and f1[1] < f2[1] for f1, f2 in zip(front, front[1:]))


def test_nested_gene_space_only_holds_contained_archs(net):
    genes = GeneSpace(net.space)
    parent = net.space.sample(3)
    inner = genes.contained_in(parent)
    rng = np.random.default_rng(0)
    for _ in range(100):
        g = {x.name: x.choices[rng.integers(len(x.choices))] for x in inner.genes}
        child = inner.arch_from_genes(g)
        assert is_contained(child, parent) and net.costs(child)[1] <= net.costs(parent)[1]
    assert is_contained(net.space.smallest(), parent) and not is_contained(net.space.largest(), parent) \
        or parent == net.space.largest()


def test_budgets_parse_and_impossible_budgets_name_the_smallest_cost(net, tmp_path):
    b = parse_budget("phone:macs=4M,params=0.3M")
    assert (b.name, b.macs, b.params) == ("phone", 4_000_000, 300_000)
    assert parse_budget("macs=2.5M").name == "macs_2.5M"
    costs = CostModel(net)
    costs.check_feasible([b])
    with pytest.raises(OFAError, match=r"below the smallest subnet \(0.9\d*M\); allowed: macs >= 0.9"):
        costs.check_feasible([parse_budget("tiny:macs=0.5M")])
    with pytest.raises(OFAError, match="params"):
        costs.check_feasible([parse_budget("params=10k")])
    for bad, msg in (("flops=3M", "unknown budget kind 'flops'"), ("macs=abc", "expected a number"),
                     ("macs", "expected KIND=VALUE"), ("latency_ms=5", "names its device")):
        with pytest.raises(OFAError, match=msg):
            parse_budget(bad)
    with pytest.raises(OFAError, match="unknown device 'pixel9'.*known devices"):
        load_latency_tables([parse_budget("latency_ms=5@pixel9")], tmp_path)
    yaml_path = tmp_path / "devices.yaml"
    yaml_path.write_text("devices:\n  mcu: {params: 0.2M}\n  phone: {macs: 8M, params: 1M}\n")
    assert [(d.name, d.macs, d.params) for d in load_devices(yaml_path)] == [("mcu", None, 200_000),
                                                                            ("phone", 8_000_000, 1_000_000)]
    yaml_path.write_text("devices:\n  mcu: {ram: 1M}\n")
    with pytest.raises(OFAError, match="unknown budget kind 'ram'; allowed"):
        load_devices(yaml_path)


def test_cli_reports_impossible_budgets_and_unknown_devices(tmp_path, capsys):
    from ofa.cli import main

    run = tmp_path / "run"
    ofa.save(ofa.create_supernet("ofa_resnet_tiny"), run / "supernet.safetensors")
    assert main(["search", str(run), "--budget", "macs=100k"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: device 'macs_100k': budget macs=0.1M is below the smallest")
    assert main(["search", str(run), "--budget", "latency_ms=3@phone"]) == 2
    assert "unknown device 'phone'" in capsys.readouterr().err
    assert main(["search", str(run)]) == 2
    assert "no budget given" in capsys.readouterr().err
    assert not (run / "search").exists()  # nothing half-written


def test_latency_budget_uses_the_device_table(net, tmp_path):
    from ofa.latency import LatencyTable, distinct_units

    # a synthetic table: each unit costs in proportion to its channels and input size (a real one is profiled)
    units = {key: 1e-4 * (1 + sum(v for v in unit.values() if isinstance(v, int))) * unit.get("size", 8)
             for key, unit in distinct_units(net).items()}
    (tmp_path / "latency").mkdir()
    LatencyTable("watch", units).save(tmp_path / "latency" / "watch.json")
    tables = load_latency_tables([parse_budget("latency_ms=1@watch")], tmp_path)  # at RUN/latency/DEVICE.json
    costs = CostModel(net, tables)
    limit = costs.cost(net.space.largest(), "latency_ms", "watch") / 2  # a budget that binds
    budget = parse_budget(f"watch:latency_ms={limit}@watch")
    costs.check_feasible([budget])
    least = costs.cost(net.space.smallest(), "latency_ms", "watch")
    with pytest.raises(OFAError, match=f"below the smallest subnet \\({least:.3g}ms\\)"):
        costs.check_feasible([parse_budget(f"latency_ms={least / 2}@watch")])
    genes = GeneSpace(net.space)
    res = evolve(genes, lambda batch: np.array([np.log(net.costs(a)[0]) for a in batch]), generations=8,
                 population=20, violations=lambda a: costs.violations(a, budget),
                 seeds=[net.space.smallest(), net.space.largest()])
    best = res.best()
    assert costs.cost(best.arch, "latency_ms", "watch") <= limit
    assert not costs.fits(net.space.largest(), budget) and not res.evaluated[net.space.largest()].feasible


def test_any_optuna_sampler_can_drive_the_search(net):
    import optuna

    genes = GeneSpace(net.space)
    limit = net.costs(net.space.smallest())[0] * 3
    res = evolve(genes, lambda batch: np.array([np.log(net.costs(a)[0]) for a in batch]), generations=3,
                 population=8, violations=lambda a: [net.costs(a)[0] / limit - 1],
                 seeds=[net.space.smallest()], sampler=optuna.samplers.TPESampler(seed=0))
    assert res.trials == 24 and net.costs(res.best().arch)[0] <= limit


def test_single_objective_fronts_match_pairwise_domination():
    from search.nsga import crowding, nondominated_ranks

    rng = np.random.default_rng(0)
    values = rng.integers(0, 6, 40).astype(float)  # ties: equal archs share a front
    violation = np.where(rng.random(40) < 0.3, rng.integers(1, 4, 40) / 10, 0.0)
    fast = nondominated_ranks(values[:, None], violation)
    pairwise = nondominated_ranks(np.stack([values, np.zeros(40)], 1), violation)  # the general path
    assert (fast == pairwise).all()
    feasible = violation <= 0
    assert fast[feasible].max() < fast[~feasible].min()  # every feasible front first
    crowd = crowding(values[:, None], fast)
    for r in np.unique(fast):  # the boundary of a front is kept (infinite), its inside is not
        members = np.flatnonzero(fast == r)
        assert np.isinf(crowd[members]).sum() == min(len(members), 2)


def test_stage_crossover_swaps_whole_stages():
    from search.nsga import NSGA2

    groups = [0, 1, 1, 1, 2, 2, 2]
    engine = NSGA2([3] * 7, population=200, seed=0, mutation_prob=0.0, crossover_prob=1.0, groups=groups)
    parents = np.array([[0] * 7, [2] * 7])
    children = engine.offspring(parents, np.array([0, 0]), np.array([np.inf, np.inf]))
    for g in (1, 2):
        columns = children[:, np.array(groups) == g]
        assert (columns == columns[:, :1]).all()  # a stage comes from one parent
    assert len({tuple(c) for c in children}) > 2  # and stages do mix


def test_effort_levels_and_explicit_sizes(tmp_path, capsys):
    from search.cli import add_arguments
    from search.effort import EFFORTS
    from search.run import SearchConfig

    assert SearchConfig(run_dir=tmp_path).search_size() == EFFORTS["default"]
    sizes = [EFFORTS[k].candidates for k in ("quick", "default", "thorough")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    size = SearchConfig(run_dir=tmp_path, effort="thorough", generations=7).search_size()
    assert (size.population, size.generations) == (EFFORTS["thorough"].population, 7)
    assert size.stage_crossover == EFFORTS["thorough"].stage_crossover
    with pytest.raises(OFAError, match=r"unknown search effort 'hard'; allowed: \['quick', 'default', 'thorough'\]"):
        SearchConfig(run_dir=tmp_path, effort="hard").search_size()
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([str(tmp_path), "--effort", "hard"])
    assert exc.value.code == 2 and "invalid choice: 'hard'" in capsys.readouterr().err


def test_archs_bred_from_index_rows_encode_as_any_arch(net):
    genes = GeneSpace(net.space)
    rng = np.random.default_rng(0)
    rows = np.stack([rng.integers(0, len(g.choices), 64) for g in genes.genes], 1)
    bred = [genes.arch_from_indices(r.tolist()) for r in rows]  # they remember their row: the vectorised path
    parsed = [net.space.arch_from_dict(a.to_dict()) for a in bred]  # the same archs without it
    assert (genes.encode(bred) == genes.encode(parsed)).all()
    inner = genes.contained_in(net.space.sample(1))  # another layout's rows are not used by this gene space
    nested = [inner.arch_from_indices([0] * len(inner.genes)), net.space.largest()]
    assert (genes.encode(nested) == genes.encode([net.space.arch_from_dict(a.to_dict()) for a in nested])).all()


def test_a_new_search_keeps_the_other_devices_and_refuses_to_break_a_nested_chain(tmp_path):
    from ofa.rundir import Selection
    from search.selection import check_merge, merge

    path = tmp_path / "selected.json"
    first = {"supernet": "supernet.safetensors", "nested": False, "order": ["phone", "board"],
             "devices": {"phone": {"macs": 5}, "board": {"macs": 1}}}
    path.write_text(json.dumps(first))
    check_merge(path, ["board", "server"], nested=False, replace=False)
    second = {"supernet": "supernet.safetensors", "nested": False, "order": ["board", "server"],
              "devices": {"board": {"macs": 2}, "server": {"macs": 9}}}
    merged = merge(path, Selection.from_dict(second), replace=False).to_dict()
    assert merged["order"] == ["board", "server", "phone"]
    assert merged["devices"] == {"board": {"macs": 2}, "server": {"macs": 9}, "phone": {"macs": 5}}
    assert merge(path, Selection.from_dict(second), replace=True).to_dict() == second
    with pytest.raises(OFAError, match=r"\['phone'\].*--replace"):  # a nested chain is one decision
        check_merge(path, ["board", "server"], nested=True, replace=False)
    check_merge(path, ["board", "server"], nested=True, replace=True)


def test_subnets_at_chance_level_are_refused_unless_forced():
    from search.selection import refuse_chance_level

    guessing = ofa.Metrics(top1=11.0, loss=2.3, correct=55, total=500, ci_low=8.5, ci_high=14.1)
    learned = ofa.Metrics(top1=95.0, loss=0.2, correct=475, total=500, ci_low=92.7, ci_high=96.6)
    assert refuse_chance_level({"phone": learned, "board": None}, num_classes=10, force=False) == []
    with pytest.raises(OFAError, match=r"board \(11.0% \[8.5, 14.1\]\).*chance level.*--force"):
        refuse_chance_level({"phone": learned, "board": guessing}, num_classes=10, force=False)
    assert refuse_chance_level({"board": guessing}, num_classes=10, force=True) == ["board (11.0% [8.5, 14.1])"]
