"""Many measurement workers on one table, for real: three `ofa search --measure-only` processes on a PostgreSQL
server with one SIGKILLed mid-measurement and restarted, and `ofa search RUN --workers 2` surviving a killed
worker. Both must end with the table one worker measures: the same keys and top-1, every arch measured once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from test_search_table import MEASURE, _trials, _worker, run  # noqa: F401  (run: the module's run directory)

import ofa
from search.table import BEATING, WORKER, measure_table, open_storage, read_table

TABLE, VAL = 6, 750  # the whole validation split: a measurement long enough (~1 s) for a kill to land inside it


@pytest.fixture(scope="module")
def reference(run, tmp_path_factory):  # noqa: F811
    """key -> top-1 of the table one in-process worker measures (what `--workers 1` does)."""
    from ofa.data import load_run_data

    storage = f"sqlite:///{tmp_path_factory.mktemp('reference') / 'one.db'}"
    measure_table(ofa.load(run / "supernet.safetensors"), load_run_data(run), storage, TABLE, seed=0,
                  calib_batches=1, batch_size=48, val_limit=VAL, progress=False)
    return {r["key"]: r["top1"] for r in read_table(storage)}


def _kill_mid_measurement(store, live_pids) -> tuple[int, int | None]:
    """SIGKILL a worker (one of ``live_pids()``) while its measurement's heartbeat runs, once at least one arch is
    measured. Returns its pid and the trial it was measuring, or None for that trial when the kill came just after
    the worker had finished it (a miss: the caller restarts the worker and tries again)."""
    deadline = time.time() + 180
    while time.time() < deadline and live_pids():
        try:
            trials = _trials(store)
        except KeyError:  # the study does not exist yet
            time.sleep(0.2)
            continue
        if any(t.state.name == "COMPLETE" for t in trials):
            for t in trials:
                pid = int(t.user_attrs.get(WORKER, ":0").rsplit(":", 1)[1])
                if t.state.name == "RUNNING" and t.user_attrs.get(BEATING) and pid in live_pids():
                    os.kill(pid, signal.SIGKILL)  # as a crash or a lost machine would
                    _wait_dead(pid)
                    landed = _trials(store)[t.number].state.name == "RUNNING"  # nobody can finish it now
                    return pid, t.number if landed else None
        time.sleep(0.05)
    raise AssertionError("no worker was caught mid-measurement")


def _wait_dead(pid: int) -> None:
    """Until ``pid`` has exited (gone, or a zombie its parent has not reaped yet)."""
    for _ in range(200):
        try:
            if open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} survived SIGKILL")


def _check_table(store, reference: dict, killed: int) -> None:
    trials = _trials(store)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    keys = [t.user_attrs["key"] for t in complete]
    assert len(keys) == len(set(keys)) == TABLE  # every planned arch measured exactly once: no duplicates
    assert {t.user_attrs["key"]: t.value for t in complete} == reference  # none lost, same top-1 as one worker
    assert trials[killed].state.name == "FAIL"  # the killed measurement was reclaimed and measured again


def test_three_workers_on_postgres_one_killed_and_restarted(run, reference, postgres_server):  # noqa: F811
    storage = postgres_server.new_database("three")
    store = open_storage(storage, None, None)
    workers = [_worker(run, storage, TABLE, grace=2, val_limit=VAL) for _ in range(3)]
    killed = None
    for _ in range(5):  # a kill that lands just after a measurement ended is a miss: restart, try again
        pid, killed = _kill_mid_measurement(store, lambda: {w.pid for w in workers if w.poll() is None})
        i = next(i for i, w in enumerate(workers) if w.pid == pid)
        assert workers[i].wait() == -signal.SIGKILL
        before = {t.user_attrs["key"]: t.value for t in _trials(store) if t.state.name == "COMPLETE"}
        workers[i] = _worker(run, storage, TABLE, grace=2, val_limit=VAL)  # restarted
        if killed is not None:
            break
    assert killed is not None, "no kill landed inside a measurement in five tries"
    outputs = [w.communicate(timeout=240)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], outputs
    _check_table(store, reference, killed)
    assert {k: reference[k] for k in before} == before  # what was measured before the kill is kept as it was


def test_workers_option_survives_a_crash_and_measures_the_table_of_one_worker(run, reference, tmp_path):  # noqa: F811
    storage = f"sqlite:///{tmp_path / 'workers.db'}"
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "ofa.cli", "search", str(run), "--measure-only", "--workers", "2", "--storage",
         storage, "--table-size", str(TABLE), "--grace-period", "2", "--val-limit", str(VAL),
         *[a for a in MEASURE if a != "--quiet"]],  # not quiet: the one progress bar is checked
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = open_storage(storage, None, None)
    try:
        while len(_children(coordinator.pid)) < 2 and coordinator.poll() is None:
            time.sleep(0.1)
        killed = None
        for _ in range(2):  # a miss (the kill came just after a measurement) costs that worker its one restart
            _, killed = _kill_mid_measurement(store, lambda: _children(coordinator.pid))  # its workers
            if killed is not None:
                break
        assert killed is not None, "no kill landed inside a measurement in two tries"
        output = coordinator.communicate(timeout=240)[0]
    finally:
        coordinator.kill()
    assert coordinator.returncode == 0, output
    assert "crashed (killed by SIGKILL" in output and "restarting it once" in output, output
    assert f"{TABLE}/{TABLE}" in output and output.count("measuring subnets") >= 1  # the whole table's bar
    _check_table(store, reference, killed)


def _children(pid: int) -> set[int]:
    """The child processes of ``pid`` (Linux /proc)."""
    try:
        return {int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()}
    except FileNotFoundError:
        return set()


def test_workers_take_the_gpus_in_turn_and_split_the_cpu_threads(run):  # noqa: F811
    from search.run import SearchConfig
    from search.workers import worker_command, worker_envs

    gpu = worker_envs(3, "cuda", 16, gpus=["2", "5"])
    assert [e["CUDA_VISIBLE_DEVICES"] for e in gpu] == ["2", "5", "2"]
    assert {e["OMP_NUM_THREADS"] for e in gpu} == {"5"}  # 16 threads, 3 workers: 5 each, none oversubscribed
    cpu = worker_envs(4, "cpu", 2)
    assert all(e == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} for e in cpu)  # never below one
    # a worker is the command a user starts by hand, with everything that fixes the plan and the measurement
    argv = worker_command(SearchConfig(run, table_size=7, seed=3, val_limit=50, grace_period=9), "sqlite:///x",
                          "cpu")
    assert argv[1:5] == ["-m", "ofa.cli", "search", str(run)] and "--measure-only" in argv
    options = dict(zip(argv[5:], argv[6:]))
    assert (options["--table-size"], options["--seed"], options["--val-limit"], options["--grace-period"]) == (
        "7", "3", "50", "9")
