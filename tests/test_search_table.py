"""Measuring for real on mnist5k: shared workers on one Optuna storage (a SQLite file and a real PostgreSQL server),
killed workers, `--workers N`, the whole `ofa search`."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

import ofa
from search.table import STUDY_NAME, measure_table, open_storage, plan_archs, read_table

MEASURE = ["--calib-batches", "1", "--batch-size", "48", "--quiet"]
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory as `ofa train` writes it (supernet + config.yaml naming mnist5k); the supernet's weights
    are fresh: these tests check the bookkeeping, not the accuracy."""
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    ofa.save(ofa.create_supernet("ofa_resnet_tiny").eval(), run / "supernet.safetensors")
    (run / "config.yaml").write_text(yaml.safe_dump({"supernet": {"name": "ofa_resnet_tiny"},
                                                     "data": {"spec": "mnist5k", "seed": 0}}))
    return run


def _worker(run, storage, size, grace=60, val_limit=48):
    return subprocess.Popen([sys.executable, "-m", "ofa.cli", "search", str(run), "--measure-only", "--storage",
                             storage, "--table-size", str(size), "--grace-period", str(grace),
                             "--val-limit", str(val_limit), *MEASURE],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _storage(request, backend: str, name: str) -> str:
    """A fresh, empty storage URL: a SQLite file in the test's tmp dir, or a new database on the test server
    (a plain postgresql:// URL, as a user would type it)."""
    if backend == "sqlite":
        return f"sqlite:///{request.getfixturevalue('tmp_path') / name}.db"
    return request.getfixturevalue("postgres_server").new_database(name)


def _trials(storage):
    """The measurement trials; ``storage`` is a URL or, in polling loops, an open storage (one connection pool)."""
    import optuna

    store = open_storage(storage, None, None) if isinstance(storage, str) else storage
    return optuna.load_study(study_name=STUDY_NAME, storage=store).get_trials(deepcopy=False)


def _two_workers(run, storage: str) -> str:
    """Two `ofa search --measure-only` workers started together on one storage."""
    workers = [_worker(run, storage, 8) for _ in range(2)]
    outputs = [w.communicate(timeout=240)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    return storage


@pytest.fixture(scope="module")
def shared(run, tmp_path_factory):
    return _two_workers(run, f"sqlite:///{tmp_path_factory.mktemp('shared') / 'shared.db'}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_workers_share_one_table_without_duplicates(run, backend, request):
    storage = request.getfixturevalue("shared") if backend == "sqlite" else _two_workers(
        run, _storage(request, backend, "two"))
    rows = read_table(storage)
    net = ofa.load(run / "supernet.safetensors")
    assert sorted(r["key"] for r in rows) == sorted(a.key() for a in plan_archs(net, 8, seed=0))
    complete = [t for t in _trials(storage) if t.state.name == "COMPLETE"]
    assert len(complete) == 8  # every arch measured exactly once, across both workers
    assert all(0 <= r["top1"] <= 100 and r["n"] == 48 for r in rows)


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_worker_loses_nothing_and_its_arch_is_reclaimed(run, backend, request):
    from ofa.data import load_run_data

    storage = _storage(request, backend, "killed")
    store = open_storage(storage, None, None)
    killed_while_running = False
    for _ in range(3):  # the kill can land between two measurements: then start a worker and try again
        # the whole validation split: a measurement long enough (~1 s) for a kill to land inside it
        worker = _worker(run, storage, 6, grace=2, val_limit=750)
        deadline = time.time() + 180
        while time.time() < deadline and worker.poll() is None:
            try:
                trials = _trials(store)
            except Exception:  # the study does not exist yet
                time.sleep(0.2)
                continue
            states = [t.state.name for t in trials]
            if states.count("COMPLETE") >= 2 and "RUNNING" in states:
                os.kill(worker.pid, signal.SIGKILL)  # mid-measurement, as a crash or a lost machine would
                break
            time.sleep(0.05)
        worker.kill()
        worker.wait()
        # once the worker is dead the storage is definitive: a RUNNING trial there is the killed measurement
        killed_while_running = "RUNNING" in [t.state.name for t in _trials(store)]
        if killed_while_running:
            break
    assert killed_while_running, "no kill landed in the middle of a measurement in three tries"
    before = {t.user_attrs["key"]: t.value for t in _trials(store) if t.state.name == "COMPLETE"}
    net = ofa.load(run / "supernet.safetensors")
    measured = measure_table(net, load_run_data(run), storage, 6, seed=0, calib_batches=1, batch_size=48,
                             val_limit=48, heartbeat_interval=1, grace_period=2, poll_seconds=0.5, progress=False)
    rows = read_table(storage)
    assert len(rows) == 6 and measured == 6 - len(before)  # nothing measured twice
    assert {r["key"]: r["top1"] for r in rows if r["key"] in before} == before  # nothing lost
    states = [t.state.name for t in _trials(store)]
    assert states.count("FAIL") >= 1 and states.count("COMPLETE") == 6  # the killed trial was reclaimed


@pytest.mark.parametrize("backend", BACKENDS)
def test_worker_killed_before_its_first_heartbeat_does_not_block_the_others(run, backend, request):
    """A worker that died between popping a trial and its first heartbeat leaves a RUNNING trial that Optuna's
    stale check never fails (it has no heartbeat); the next worker must reclaim it, not wait on it forever."""
    import threading

    import optuna

    from ofa.data import load_run_data

    net = ofa.load(run / "supernet.safetensors")
    storage = _storage(request, backend, "early")
    study = optuna.create_study(storage=open_storage(storage, 1, 2), study_name=STUDY_NAME, direction="maximize")
    for a in plan_archs(net, 4, seed=0):
        study.enqueue_trial({}, user_attrs={"key": a.key(), "arch": a.to_json()})
    abandoned = study.ask()  # popped, then the worker died: RUNNING, no heartbeat ever recorded
    time.sleep(2.5)  # older than the grace period
    measured = []
    worker = threading.Thread(daemon=True, target=lambda: measured.append(measure_table(
        net, load_run_data(run), storage, 4, seed=0, calib_batches=1, batch_size=48, val_limit=48,
        heartbeat_interval=1, grace_period=2, poll_seconds=0.2, progress=False)))
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the worker waited on a dead trial"
    assert measured == [4] and len(read_table(storage)) == 4
    assert study.get_trials(deepcopy=False)[abandoned.number].state.name == "FAIL"


def test_search_writes_the_contract_outputs(run, shared, capsys):
    from search.budgets import parse_budget
    from search.run import SearchConfig, search

    budgets = [parse_budget("small:params=0.12M"), parse_budget("mid:macs=4M")]
    cfg = SearchConfig(run_dir=run, budgets=budgets, storage=shared, table_size=8, predictor="ridge", generations=4, population=12,
                       nested=True, rerank=2, calib_batches=1, batch_size=48, val_limit=48, test_limit=96)
    outcome = search(cfg)
    out = run / "search"
    for name in ("accuracy_table.csv", "predictor.safetensors", "predictor.json", "pareto.csv", "pareto.png",
                 "selected.json", "search_log.csv", "report.json"):
        assert (out / name).is_file(), name
    assert len((out / "accuracy_table.csv").read_text().splitlines()) == 9  # measured by the workers
    selected = json.loads((out / "selected.json").read_text())
    assert set(selected) == {"supernet", "nested", "order", "devices"} and selected["nested"] is True
    assert sorted(selected["order"]) == ["mid", "small"]
    net = ofa.load(run / "supernet.safetensors")
    chain = [net.space.arch_from_dict(selected["devices"][d]["arch"]) for d in selected["order"]]
    from search.genes import is_contained

    assert is_contained(chain[0], chain[1])
    for entry in selected["devices"].values():
        assert set(entry) == {"budget", "arch", "macs", "params", "latency_ms", "predicted", "measured",
                              "latency_measured"}
        assert entry["latency_measured"] is None  # no latency budget here
        arch = net.space.arch_from_dict(entry["arch"])
        assert (entry["macs"], entry["params"]) == net.costs(arch)
        limit = entry["budget"]
        assert limit["macs"] is None or entry["macs"] <= limit["macs"]
        assert limit["params"] is None or entry["params"] <= limit["params"]
        m = entry["measured"]
        assert m["split"] == "test" and m["n"] == 96 and m["ci_low"] <= m["top1"] <= m["ci_high"]
        assert entry["predicted"]["metric"] == "top1"
    assert json.loads((out / "predictor.json").read_text())["held_out"]["n"] >= 3
    assert "Kendall tau" in capsys.readouterr().out
    assert [c.budget.name for c in outcome.choices] == selected["order"]
    import optuna

    for name in selected["order"]:  # the re-ranked candidates, as trials beside the measurements
        trials = optuna.load_study(study_name=f"search:{name}", storage=shared).get_trials(deepcopy=False)
        chosen = [t for t in trials if t.user_attrs["chosen"]]
        assert len(chosen) == 1 and chosen[0].user_attrs["arch"] == net.space.arch_from_dict(
            selected["devices"][name]["arch"]).to_json()
        assert chosen[0].user_attrs["test_top1"] == selected["devices"][name]["measured"]["top1"]
        assert all(v <= 0 for v in chosen[0].constraints.values())
    front = optuna.load_study(study_name="search-front:macs", storage=shared)
    assert len(front.directions) == 2 and len(front.trials) >= 1


def test_many_budgets_on_one_cost_run_as_a_sweep(run, shared):
    import optuna

    from search.budgets import parse_budget
    from search.effort import SWEEP_MIN_BUDGETS
    from search.run import SearchConfig, search

    net = ofa.load(run / "supernet.safetensors")
    low, high = net.costs(net.space.smallest())[0], net.costs(net.space.largest())[0]
    limits = [low + (high - low) * (i + 1) / (SWEEP_MIN_BUDGETS + 1) for i in range(SWEEP_MIN_BUDGETS)]
    budgets = [parse_budget(f"d{i}:macs={m / 1e6:.4f}M") for i, m in enumerate(limits)]
    cfg = SearchConfig(run_dir=run, budgets=budgets, storage=shared, table_size=8, predictor="ridge",
                       generations=6, population=12, rerank=1, measure_test=False, progress=False,
                       replace=True)  # this run's earlier tests left a nested selection
    for _ in range(2):  # a second search replaces the recorded studies instead of adding to them
        outcome = search(cfg)
    assert len(outcome.choices) == SWEEP_MIN_BUDGETS
    for c in outcome.choices:
        assert net.costs(c.arch)[0] <= c.budget.macs
    log = (run / "search" / "search_log.csv").read_text()
    assert "d0,2," in log and "d0,3," not in log  # a third of the generations per budget, after the front
    studies = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(shared)}
    assert all(studies[f"search:d{i}"] == 1 for i in range(SWEEP_MIN_BUDGETS))


def test_latency_choice_over_budget_in_deployed_form_takes_the_next_candidate(run, shared, tmp_path):
    import platform

    from ofa.latency import LatencyTable, distinct_units
    from search.budgets import parse_budget
    from search.run import SearchConfig, search

    net = ofa.load(run / "supernet.safetensors")
    # a table made on this host: every unit 0.01 ms, so a subnet's latency counts its units
    table = LatencyTable("here", {k: 0.01 for k in distinct_units(net)}, meta={"host": platform.node(), "threads": 1})
    lut = table.save(tmp_path / "here.json")
    limit = (table.predict(net, net.space.smallest()) + table.predict(net, net.space.largest())) / 2
    timed = []

    def timer(model, x):  # no real timing: the first subnet timed runs 1.5x its prediction, the others as predicted
        timed.append(model.description["macs"])
        return [table.predict(model) * (1.5 if len(timed) == 1 else 1.0)] * 9

    cfg = SearchConfig(run_dir=run, budgets=[parse_budget(f"here:latency_ms={limit}@here")], storage=shared,
                       table_size=8, predictor="ridge", generations=6, population=12, rerank=3, calib_batches=1,
                       batch_size=48, val_limit=48, measure_test=False, progress=False, luts={"here": str(lut)},
                       latency_timer=timer, replace=True)
    choice = search(cfg).choices[0]
    assert choice.latency["verified"] and choice.latency["fallbacks"] == 1 and len(timed) == 2
    assert choice.latency["median_ms"] <= limit and net.costs(choice.arch)[0] == timed[1]
    first = choice.latency["checks"][0]
    assert not first["passed"] and first["median_ms"] > limit  # the re-ranked favourite, measured over budget
    selected = json.loads((run / "search" / "selected.json").read_text())["devices"]["here"]
    assert selected["latency_measured"]["median_ms"] == choice.latency["median_ms"]
    assert net.space.arch_from_dict(selected["arch"]) == choice.arch

    # nested: the replaced choice must still contain the next smaller device's subnet (re-nested below it)
    timed.clear()
    small = parse_budget(f"small:macs={net.costs(net.space.smallest())[0] * 1.01 / 1e6:.4f}M")
    nested = search(dataclasses.replace(cfg, budgets=[small, *cfg.budgets], nested=True))
    from search.genes import is_contained

    by_name = {c.budget.name: c for c in nested.choices}
    assert by_name["here"].latency["fallbacks"] >= 1
    assert is_contained(nested.choices[0].arch, nested.choices[1].arch)  # smallest first, still one chain

    cfg.latency_timer = lambda model, x: [table.predict(model) * 2] * 9  # nothing fits: a clear error
    with pytest.raises(ofa.OFAError, match=r"device 'here': none of the \d+ candidates tried runs within latency_ms="
                                           r".*the fastest measured .* ms \(median"):
        search(cfg)
    cfg.strict_latency = False  # the demo's choice: warn and keep the fastest measured candidate
    choice = search(cfg).choices[0]
    assert choice.latency["verified"] and not choice.latency["passed"]
    assert choice.latency["median_ms"] == min(c["median_ms"] for c in choice.latency["checks"])


def test_a_table_of_this_host_is_reanchored_to_the_sessions_speed(run):
    import platform

    from ofa.latency import LatencyTable, distinct_units
    from search.verify import SESSION_REFERENCES, recalibrate

    net = ofa.load(run / "supernet.safetensors")
    here = LatencyTable("here", {k: 0.01 for k in distinct_units(net)}, meta={"host": platform.node(), "threads": 1})
    elsewhere = LatencyTable("board", here.units, meta={"host": "a-board", "threads": 1})
    arch, said = net.space.sample(3), []

    def timer_at(speed):  # no real timing: every deployed subnet runs `speed` times its prediction
        return lambda model, x: [here.predict(model) * speed] * 9

    tables = recalibrate({"here": here, "board": elsewhere}, net, timer_at(1.3), said.append)
    assert tables["here"].predict(net, arch) == pytest.approx(1.3 * here.predict(net, arch))
    assert tables["here"].meta["session"]["measured_over_predicted"] == pytest.approx(1.3)
    assert tables["here"].meta["session"]["references"] == SESSION_REFERENCES and "1.30x slower" in said[0]
    assert tables["board"] is elsewhere  # another host's table: only that device can time it
    calm = recalibrate({"here": here}, net, timer_at(1.03), said.append)  # within the drift tolerance: as it is
    assert calm["here"] is here and len(said) == 1
    fast = recalibrate({"here": here}, net, timer_at(0.7), said.append)  # faster now: the table stays cautious
    assert fast["here"] is here and len(said) == 1
