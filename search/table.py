"""The measured accuracy table: BN-calibrated validation top-1 (and loss) of archs spread over the cost range.

Measurements are trials of an Optuna study on a storage URL, so several workers (processes or machines) started
on the same storage share the work:

* every worker computes the same plan (``plan_archs``: deterministic given the seed) and enqueues each planned
  arch that has no live trial yet, keyed by ``arch.key()`` (a hash of the canonical arch);
* a worker pops a WAITING trial (Optuna makes the pop atomic), measures it and tells the result. If two workers
  raced and enqueued one arch twice, the lowest-numbered live trial of that key owns it and the other is pruned
  unmeasured, so no arch is measured twice;
* a killed worker's trial is reclaimed: on an RDB storage (the default SQLite file, PostgreSQL, MySQL) each
  running measurement records a heartbeat and a trial whose heartbeat is older than ``grace_period`` is failed
  (``optuna.storages.fail_stale_trials``) and re-enqueued. A worker killed between popping a trial and its first
  heartbeat leaves a RUNNING trial that Optuna never sees as stale (it has no heartbeat at all): such a trial,
  older than ``grace_period`` and never marked as beating, is failed too, or every other worker would wait on it
  forever. Optuna's journal storage has no heartbeat: there a
  RUNNING trial older than ``stale_after`` seconds is taken for dead. Use an RDB storage for several workers;
  a journal file is fine for one worker (a restart reclaims what the killed run left behind).

Finished measurements live in the storage, so a restart never loses one; the CSV is written from the storage by
one writer (atomically), never appended to by racing workers.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

import ofa
from ofa import Arch, OFAError
from ofa.io import atomic_write
from ofa.rundir import RunDir

STUDY_NAME = "accuracy_table"
COLUMNS = ("key", "arch", "resolution", "macs", "params", "top1", "loss", "ci_low", "ci_high", "n")
BEATING = "beating"  # user attr set by _Heartbeat once a measurement's first heartbeat is written
WORKER = "worker"  # user attr: HOST:PID of the process measuring the trial (who to blame, what to kill)
LIVE = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)


# -- the plan -------------------------------------------------------------------------------------------------------
def plan_archs(net, count: int, seed: int = 0, pool_factor: int = 20, bins: int = 12) -> list[Arch]:
    """``count`` distinct archs stratified by log-MACs: uniform sampling crowds the middle of the cost range,
    so a pool of random archs is binned by cost and the bins are drawn round-robin. Largest and smallest first."""
    if count < 1:
        raise OFAError(f"the accuracy table needs at least 1 arch, got {count}")
    space = net.space
    chosen: dict[str, Arch] = {}
    for a in (space.largest(), space.smallest()):
        if len(chosen) < count:
            chosen[a.key()] = a
    rng = random.Random(seed)
    pool: dict[str, Arch] = {}
    for _ in range(count * pool_factor):
        a = space.sample(rng)
        if a.key() not in chosen:
            pool.setdefault(a.key(), a)
    archs = list(pool.values())
    if archs:
        logm = np.log([net.costs(a)[0] for a in archs])
        edges = np.linspace(logm.min(), logm.max() + 1e-9, bins + 1)
        members: list[list[Arch]] = [[] for _ in range(bins)]
        for a, v in zip(archs, np.searchsorted(edges, logm, side="right") - 1):
            members[min(int(v), bins - 1)].append(a)
        while len(chosen) < count and any(members):
            for m in members:
                if m and len(chosen) < count:
                    a = m.pop(0)
                    chosen[a.key()] = a
    return list(chosen.values())


# -- storages -------------------------------------------------------------------------------------------------------
def default_storage(run_dir: str | Path) -> str:
    return f"sqlite:///{RunDir(Path(run_dir).resolve()).study_db}"


def open_storage(url: str, heartbeat_interval: int = 10, grace_period: int = 60):
    """An Optuna storage for a URL: an RDB URL (sqlite:///, postgresql://, mysql://) with a heartbeat, or a
    journal file given as ``journal:PATH`` (or a path ending in .log / .journal)."""
    if url.startswith("journal:") or (url.endswith((".log", ".journal")) and "://" not in url):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise OFAError(f"storage {url!r} is not an Optuna storage URL; allowed: sqlite:///PATH, "
                       "postgresql://USER@HOST/DB, mysql://..., or journal:PATH")
    engine_kwargs = None
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # several local workers wait for the file lock
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat args
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(engine_url(url), engine_kwargs=engine_kwargs,
                                              heartbeat_interval=heartbeat_interval, grace_period=grace_period)
        except ImportError as e:
            raise OFAError(f"storage {url!r} needs a database driver that is not installed ({e}); "
                           "for PostgreSQL: pip install 'psycopg[binary]' (this project's postgres extra)") from None
        except Exception as e:  # workers started together race to create the schema: the loser retries
            if attempt == 4:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise OFAError(f"cannot open storage {url!r}: {first}") from e
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def engine_url(url: str) -> str:
    """The SQLAlchemy URL for a storage URL. A plain ``postgresql://`` (or ``postgres://``) URL names no driver,
    and SQLAlchemy then picks psycopg2; this project installs psycopg 3 (the ``postgres`` extra), so such URLs
    are pointed at it, unless only psycopg2 is installed. Every other URL is returned unchanged."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql://{rest}"
    return f"postgresql+psycopg://{rest}"  # psycopg missing too: the ImportError names it, the caller says how


def _has_heartbeat(storage) -> bool:
    return isinstance(storage, optuna.storages.RDBStorage) and storage.heartbeat_interval is not None


class _Heartbeat:
    """Records a running trial's heartbeat every ``interval`` seconds (what ``study.optimize`` does for you;
    the ask/tell loop here has to do it itself), and marks the trial as beating once the first one is written,
    so that a trial without the mark is known to have died before it (see ``_reclaim_dead``)."""

    def __init__(self, storage, trial_id: int) -> None:
        self.storage, self.trial_id, self.stop = storage, trial_id, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True) if _has_heartbeat(storage) else None

    def _run(self) -> None:
        while True:
            self.storage.record_heartbeat(self.trial_id)
            if self.stop.wait(self.storage.heartbeat_interval):
                return

    def __enter__(self) -> _Heartbeat:
        if self.thread is not None:
            self.storage.record_heartbeat(self.trial_id)
            self.storage.set_trial_user_attr(self.trial_id, BEATING, True)  # raises if reclaimed meanwhile
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


def _reclaim_dead(study: optuna.Study, storage, stale_after: float, grace_period: float) -> None:
    """Fail the RUNNING trials of killed workers (their archs are then re-enqueued by the plan)."""
    now = datetime.datetime.now()
    if _has_heartbeat(storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        # killed before its first heartbeat: Optuna's stale check skips trials that never had one
        dead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if not t.user_attrs.get(BEATING) and _age(t, now) > grace_period]
    else:
        dead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if _age(t, now) > stale_after]
    for t in dead:
        try:
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            pass  # finished (or reclaimed by another worker) meanwhile


def _finish(study: optuna.Study, trial: optuna.Trial, state: TrialState) -> None:
    """Tell ``state`` unless another worker already finished the trial (reclaimed it as dead): nothing to do then."""
    try:
        study.tell(trial, state=state)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
        pass


def _age(trial, now: datetime.datetime) -> float:
    return (now - trial.datetime_start).total_seconds() if trial.datetime_start is not None else 0.0


def _live_owner(trials, key: str):
    """The trial that owns ``key``: a COMPLETE one, else the lowest-numbered WAITING/RUNNING one."""
    same = [t for t in trials if t.user_attrs.get("key") == key and t.state in LIVE]
    done = [t for t in same if t.state == TrialState.COMPLETE]
    return (done or sorted(same, key=lambda t: t.number) or [None])[0]


# -- measuring ------------------------------------------------------------------------------------------------------
def measure_arch(net, data, arch: Arch, calib_batches: int = 4, batch_size: int = 128,
                 split: str = "val", limit: int | None = None) -> ofa.Metrics:
    """BN-calibrate ``arch`` on calibration images, then measure it on ``split``; the supernet's own BN
    statistics are restored afterwards."""
    r = arch.resolution
    calib = data.eval_loader("calib", r, batch_size=batch_size, limit=calib_batches * batch_size)
    with net.active(arch), ofa.calibrate_bn(net, calib, num_batches=calib_batches):
        return ofa.evaluate(net, data.eval_loader(split, r, batch_size=batch_size, limit=limit))


def measure_table(net, data, storage: str, count: int, seed: int = 0, study_name: str = STUDY_NAME,
                  calib_batches: int = 4, batch_size: int = 128, val_limit: int | None = None,
                  heartbeat_interval: int = 10, grace_period: int = 60, stale_after: float = 1800.0,
                  poll_seconds: float = 2.0, max_measurements: int | None = None, progress: bool = True,
                  on_measured: Callable[[Arch, ofa.Metrics], None] | None = None, device: str | None = None,
                  attrs: Callable[[Arch], dict] | None = None) -> int:
    """Run one measurement worker until every planned arch is measured; returns how many it measured.

    Start it in several processes on the same ``storage`` to share the work. ``max_measurements`` stops this
    worker early (the rest stays queued for others or a restart). ``device`` moves ``net`` there (e.g. "cuda").
    ``attrs(arch)``: further user attributes of a measured arch (e.g. its predicted latencies, for the dashboard).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # the loop below records heartbeats itself (_Heartbeat), which Optuna warns about outside study.optimize
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    store = open_storage(storage, heartbeat_interval, grace_period)
    study = optuna.create_study(storage=store, study_name=study_name, direction="maximize", load_if_exists=True)
    if study.metric_names is None:  # the first worker says what the dashboard shows
        study.set_metric_names(["val_top1"])
        study.set_user_attr("contents", "accuracy table: BN-calibrated validation top-1 of subnets, one trial each")
        study.set_user_attr("supernet", getattr(net, "name", type(net).__name__))
    planned = plan_archs(net, count, seed)
    planned_keys = {a.key() for a in planned}
    home = next(net.parameters()).device
    if device is not None:
        net.to(device)  # and back at the end: the search after the table runs where the caller put the net
    net.eval()
    done_here = 0
    bar = _progress(progress, len(planned))
    try:
        while max_measurements is None or done_here < max_measurements:
            _reclaim_dead(study, store, stale_after, grace_period)
            trials = study.get_trials(deepcopy=False)
            owners = {t.user_attrs.get("key") for t in trials if t.state in LIVE}
            for a in planned:
                if a.key() not in owners:
                    study.enqueue_trial({}, user_attrs={"key": a.key(), "arch": a.to_json()})
            _update(bar, sum(1 for t in trials if t.state == TrialState.COMPLETE
                             and t.user_attrs.get("key") in planned_keys))
            if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    time.sleep(poll_seconds)  # another worker is measuring, or a dead one is not stale yet
                    continue
                break
            trial = study.ask()
            key = trial.user_attrs.get("key")
            owner = _live_owner(study.get_trials(deepcopy=False), key) if key else None
            if key is None or owner is None or owner.number != trial.number:
                # another worker popped the last waiting trial first (Optuna then created an empty one), or a
                # racing worker enqueued this arch too and an older trial owns it: never measure twice
                _finish(study, trial, TrialState.PRUNED)
                continue
            arch = net.space.arch_from_json(trial.user_attrs["arch"])
            try:
                trial.set_user_attr(WORKER, f"{socket.gethostname()}:{os.getpid()}")
                with _Heartbeat(store, trial._trial_id):
                    m = measure_arch(net, data, arch, calib_batches, batch_size, "val", val_limit)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # this worker stalled past grace_period before its first heartbeat and was reclaimed
            except BaseException:
                _finish(study, trial, TrialState.FAIL)  # re-enqueued by the next worker that looks
                raise
            macs, params = net.costs(arch)
            extra = attrs(arch) if attrs is not None else {}
            try:
                for name, value in (("macs", macs), ("params", params), ("top1", m.top1), ("loss", m.loss),
                                    ("ci_low", m.ci_low), ("ci_high", m.ci_high), ("n", m.total),
                                    ("resolution", arch.resolution), *extra.items()):
                    trial.set_user_attr(name, value)
                study.tell(trial, m.top1)
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError):  # ValueError: tell on a FAIL trial
                continue  # reclaimed as dead meanwhile (a stall longer than grace_period): the arch is re-measured
            done_here += 1
            if on_measured is not None:
                on_measured(arch, m)
    finally:
        net.to(home)
        if bar is not None:
            bar.close()
    return done_here


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="measuring subnets", unit="arch")


def _update(bar, done: int) -> None:
    if bar is not None:
        bar.n = done
        bar.refresh()


# -- the table ------------------------------------------------------------------------------------------------------
def read_table(storage: str, study_name: str = STUDY_NAME) -> list[dict]:
    """One row per measured arch (the owner trial of each key), sorted by MACs then key."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage, None, None))
    except KeyError:
        raise OFAError(f"no measurements in {storage} (study {study_name!r}); measure with `ofa search RUN`") \
            from None
    rows: dict[str, dict] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        key = t.user_attrs.get("key")
        if key is None or key in rows:
            continue
        u = t.user_attrs
        rows[key] = {"key": key, "arch": u["arch"], "resolution": u["resolution"], "macs": u["macs"],
                     "params": u["params"], "top1": t.value, "loss": u["loss"], "ci_low": u["ci_low"],
                     "ci_high": u["ci_high"], "n": u["n"]}
    return sorted(rows.values(), key=lambda r: (r["macs"], r["key"]))


def write_table_csv(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _fmt(r[k]) for k in COLUMNS})
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))
    return path


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else v


def load_table_csv(path: str | Path, space) -> list[dict]:
    """Rows of an accuracy_table.csv with ``arch`` parsed into an :class:`ofa.Arch` of ``space``."""
    path = Path(path)
    if not path.is_file():
        raise OFAError(f"no accuracy table at {path}; measure one with `ofa search RUN`")
    rows = []
    with path.open(newline="") as f:
        for i, r in enumerate(csv.DictReader(f)):
            missing = [c for c in COLUMNS if c not in r]
            if missing:
                raise OFAError(f"{path}: missing column {missing[0]!r}; expected columns {list(COLUMNS)}")
            try:
                rows.append({"key": r["key"], "arch": space.arch_from_dict(json.loads(r["arch"])),
                             "resolution": int(r["resolution"]), "macs": int(r["macs"]),
                             "params": int(r["params"]), "top1": float(r["top1"]), "loss": float(r["loss"]),
                             "ci_low": float(r["ci_low"]), "ci_high": float(r["ci_high"]), "n": int(r["n"])})
            except (ValueError, json.JSONDecodeError, ofa.ArchError) as e:
                raise OFAError(f"{path} row {i + 2}: {e}") from None
    return rows
