"""``ofa search RUN --workers N``: N local measurement workers on the run's storage, one progress bar.

Each worker is the process a user would start by hand on another machine (``ofa search RUN --measure-only`` on
the same storage, see ``search.table``), so a local run and a many-machine run share one mechanism. With GPUs,
the workers take them in turn (one per GPU when N equals the GPU count) and measure there; without, the CPU
threads are split between them so that N workers do not oversubscribe the cores. This process only watches: it
shows how much of the whole table is measured, and restarts a crashed worker once (the subnet the worker was
measuring is failed and re-queued by the others after the heartbeat grace period, see ``search.table``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ofa import OFAError

from .budgets import latency_attrs
from .table import STUDY_NAME, _progress, _update, measure_table, open_storage, plan_archs

USER_ERROR = 2  # the exit code of an OFAError: restarting would repeat it


@dataclass
class _Worker:
    index: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None
    crashes: int = 0


def measure_device(requested: str = "auto") -> str:
    """Where the accuracy table is measured: "cuda" when asked for or (auto) when a GPU is visible, else "cpu"."""
    if requested not in ("auto", "cpu", "cuda"):
        raise OFAError(f"unknown measurement device {requested!r}; allowed: auto, cpu, cuda")
    if requested == "cpu":
        return requested
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise OFAError("--measure-device cuda: no GPU is visible (torch.cuda.is_available() is False)")
    return "cuda" if torch.cuda.is_available() else "cpu"


def worker_envs(n: int, device: str, threads: int, gpus: list[str] | None = None) -> list[dict[str, str]]:
    """The environment changes of each of ``n`` workers: on CUDA, one GPU each, taken in turn (``gpus``: the
    visible ones, default from CUDA_VISIBLE_DEVICES or all); always ``threads`` CPU threads split between them."""
    per_worker = str(max(1, threads // n))
    envs = [{"OMP_NUM_THREADS": per_worker, "MKL_NUM_THREADS": per_worker} for _ in range(n)]
    if device == "cuda":
        if gpus is None:
            import torch

            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        if not gpus:
            raise OFAError("--measure-device cuda: no GPU is visible")
        for i, env in enumerate(envs):
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
    return envs


def worker_command(cfg, storage: str, device: str) -> list[str]:
    """``ofa search RUN --measure-only`` with everything that fixes the plan and the measurement."""
    argv = [sys.executable, "-m", "ofa.cli", "search", str(cfg.run_dir), "--measure-only", "--quiet",
            "--storage", storage, "--table-size", str(cfg.table_size), "--seed", str(cfg.seed),
            "--calib-batches", str(cfg.calib_batches), "--batch-size", str(cfg.batch_size),
            "--grace-period", str(cfg.grace_period), "--heartbeat-interval", str(cfg.heartbeat_interval),
            "--stale-after", str(cfg.stale_after), "--measure-device", device]
    if cfg.val_limit is not None:
        argv += ["--val-limit", str(cfg.val_limit)]
    for lut_device, path in cfg.luts.items():  # their predictions are recorded beside each measurement
        argv += ["--lut", f"{lut_device}={path}"]
    return argv


def check_workers(n: int, storage: str) -> None:
    """Refuse what cannot work before anything starts."""
    if n < 1:
        raise OFAError(f"--workers must be a positive integer, got {n}")
    if n > 1 and "://" not in storage:
        raise OFAError(f"--workers {n} needs an RDB storage (sqlite:///PATH or postgresql://...), got {storage!r}: "
                       "a journal storage has no heartbeat, so a crashed worker's subnet would wait --stale-after")


def measure_with_workers(cfg, net, data, storage: str) -> None:
    """Measure the accuracy table of a ``search.run.SearchConfig``: in this process (``cfg.workers == 1``) or by
    ``cfg.workers`` worker processes, after which this process measures only what crashed workers left."""
    device = measure_device(cfg.measure_device)
    if cfg.workers > 1:
        run_workers(cfg, storage, {a.key() for a in plan_archs(net, cfg.table_size, cfg.seed)})
    measure_table(net, data, storage, cfg.table_size, seed=cfg.seed, calib_batches=cfg.calib_batches,
                  batch_size=cfg.batch_size, val_limit=cfg.val_limit, heartbeat_interval=cfg.heartbeat_interval,
                  grace_period=cfg.grace_period, stale_after=cfg.stale_after,
                  progress=cfg.progress and cfg.workers == 1, device=device,  # one bar: the workers' when N > 1
                  attrs=latency_attrs(net, cfg.run_dir, cfg.luts))


def run_workers(cfg, storage: str, planned_keys: set[str], poll_seconds: float = 1.0) -> int:
    """Run ``cfg.workers`` measurement workers until all have finished; returns how many crashes were survived.

    A worker that crashes (killed, out of memory, a bug) is reported and restarted once; a second crash leaves it
    stopped (the others, or the caller's own measuring afterwards, finish its share). A worker that exits with a
    user error stops them all with that error.
    """
    n = cfg.workers
    check_workers(n, storage)
    device = measure_device(cfg.measure_device)
    # create the study (and the schema) once here: N workers racing to do it would only retry
    study = optuna.create_study(storage=open_storage(storage, None, None), study_name=STUDY_NAME,
                                direction="maximize", load_if_exists=True)
    command = worker_command(cfg, storage, device)
    bar = _progress(cfg.progress, len(planned_keys))
    crashes = 0
    with tempfile.TemporaryDirectory(prefix="ofa-workers-") as logs:
        workers = [_Worker(i, env, Path(logs) / f"worker{i}.log")
                   for i, env in enumerate(worker_envs(n, device, _threads()))]
        try:
            for w in workers:
                _start(w, command)
            while any(w.proc is not None for w in workers):
                time.sleep(poll_seconds)
                for w in workers:
                    code = w.proc.poll() if w.proc is not None else None
                    if code is None:
                        continue
                    w.proc = None
                    if code == USER_ERROR:
                        raise OFAError(f"measurement worker {w.index}: {_last_line(w.log)}")
                    if code != 0:
                        crashes += 1
                        w.crashes += 1
                        again = w.crashes == 1
                        _warn(f"measurement worker {w.index} crashed ({_describe(code)}; last output: "
                              f"{_last_line(w.log)}); " + ("restarting it once; the subnet it was measuring is "
                                                           f"re-queued after --grace-period {cfg.grace_period} s"
                                                           if again else "not restarted again"))
                        if again:
                            _start(w, command)
                trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                _update(bar, len({t.user_attrs.get("key") for t in trials} & planned_keys))
        finally:
            for w in workers:  # an error or Ctrl-C here must not leave workers running
                if w.proc is not None:
                    w.proc.kill()
                    w.proc.wait()
            if bar is not None:
                bar.close()
    return crashes


def _start(w: _Worker, command: list[str]) -> None:
    with w.log.open("a") as log:  # the child keeps its own handle
        w.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **w.env})


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(none)"


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)
