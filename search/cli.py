"""The ``ofa search`` subcommand's arguments (argparse only at import time, so ``ofa --help`` stays instant)."""

from __future__ import annotations

import argparse

from ofa.cli.format import THREADS_HELP

from .effort import EFFORTS

DESCRIPTION = """\
Pick, for every device budget, the subnet with the best predicted accuracy, without retraining:
measure a table of BN-calibrated subnets on the validation split (an Optuna study on --storage: start more
workers with --measure-only on the same storage to share the work), fit an accuracy predictor, run NSGA-II per
budget, then measure each chosen subnet on the test split. Writes RUN/search/{accuracy_table.csv, predictor.*,
pareto.csv, pareto.png, selected.json, report.json, search_log.csv}."""

EXAMPLES = """\
examples:
  ofa search runs/tiny --budget macs=5M --budget params=0.2M
  ofa search runs/tiny --devices devices.yaml --nested
  ofa search runs/tiny --budget phone:latency_ms=3@pixel7 --lut pixel7=pixel7.json
  ofa search runs/tiny --budget board:latency_ms=2@pi5,precision=int8     (RUN/latency/pi5.int8.json)
  ofa search runs/tiny --budget macs=5M --workers 4    (4 local measurement workers: one per GPU, or CPU split)
  ofa search runs/tiny --measure-only --storage postgresql://user@db/ofa     (one per worker machine)
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = DESCRIPTION
    p.epilog = EXAMPLES
    p.add_argument("run", help="run directory written by `ofa train` (supernet.safetensors, config.yaml)")
    p.add_argument("--budget", action="append", default=[], metavar="[NAME:]KIND=VALUE[,...]",
                   help="a device budget: macs=40M, params=0.3M, latency_ms=5@DEVICE, and precision=int8 for a "
                        "device that runs int8 (its latency from the DEVICE.int8 table) (repeatable)")
    p.add_argument("--devices", metavar="YAML",
                   help="devices.yaml: devices: {NAME: {macs: 40M, ..., precision: float32|int8}}")
    p.add_argument("--lut", action="append", default=[], metavar="DEVICE=PATH",
                   help="latency table of a device (default RUN/latency/DEVICE.json; DEVICE.int8=PATH and "
                        "RUN/latency/DEVICE.int8.json for int8 devices)")
    p.add_argument("--storage", help="Optuna storage URL of the measurements (default "
                                     "sqlite:///RUN/search/study.db; postgresql://... for several machines; "
                                     "journal:PATH for one worker)")
    p.add_argument("--table-size", type=int, default=200, help="subnets to measure (default 200)")
    p.add_argument("--measure-only", action="store_true", help="only measure the table (a worker), then exit")
    p.add_argument("--workers", type=int, default=1,
                   help="measurement worker processes on this machine (default 1: measure in this process); "
                        "GPUs are taken in turn, or the CPU threads are split between them")
    p.add_argument("--measure-device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the table is measured (default auto: cuda when a GPU is visible)")
    p.add_argument("--predictor", default="mlp", help="mlp (default), ensemble or ridge")
    p.add_argument("--target", default="top1", choices=["top1", "loss"], help="what the predictor fits")
    p.add_argument("--compare-predictors", action="store_true",
                   help="also fit the other predictor families and record their held-out scores")
    p.add_argument("--mode", default="constrained", choices=["constrained", "pareto"],
                   help="NSGA-II per budget with constraints (default) or one multi-objective run per cost")
    p.add_argument("--effort", default="default", choices=list(EFFORTS),
                   help="candidates per budget: " + ", ".join(f"{k} {e.population} x {e.generations}"
                                                                for k, e in EFFORTS.items())
                   + " (population x generations; about 0.3 s, 1 s and 10 s per budget with a fast "
                     "predictor, default: default)")
    p.add_argument("--generations", type=int, default=None,
                   help="NSGA-II generations per budget (default: the --effort level's)")
    p.add_argument("--population", type=int, default=None, help="NSGA-II population (default: the --effort level's)")
    p.add_argument("--mutation-prob", type=float, default=None, help="per gene (default 1/number of genes)")
    p.add_argument("--crossover-prob", type=float, default=0.9, help="NSGA-II crossover probability")
    p.add_argument("--nested", action="store_true",
                   help="choose one chain: each smaller subnet contained in the next larger one")
    p.add_argument("--rerank", type=int, default=5,
                   help="measure the top K predicted subnets per budget on validation, keep the best (1: off)")
    p.add_argument("--replace", action="store_true",
                   help="write selected.json anew (default: an earlier search's other devices are kept; a nested "
                        "chain is never merged)")
    p.add_argument("--force", action="store_true",
                   help="write subnets whose test top-1 is at chance level (refused by default: the run did not learn)")
    p.add_argument("--seed", type=int, default=0, help="seed of the measured subnets and of the search")
    p.add_argument("--calib-batches", type=int, default=4, help="BN calibration batches per subnet")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch when measuring subnets")
    p.add_argument("--val-limit", type=int, default=None, help="measure on the first N validation images")
    p.add_argument("--no-test", action="store_true", help="skip measuring the chosen subnets on the test split")
    p.add_argument("--grace-period", type=int, default=60,
                   help="seconds without a heartbeat after which a worker's measurement is reclaimed (RDB)")
    p.add_argument("--heartbeat-interval", type=int, default=None,
                   help="seconds between a measurement's heartbeats (default a quarter of --grace-period)")
    p.add_argument("--stale-after", type=float, default=1800.0,
                   help="journal storage (no heartbeat): seconds after which a RUNNING measurement is reclaimed")
    p.add_argument("--dashboard", action="store_true",
                   help="print how to open the measurement study in optuna-dashboard, then exit")
    p.add_argument("--threads", type=int, help=THREADS_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .budgets import load_devices, parse_budget, parse_luts
    from .run import SearchConfig, search
    from .table import default_storage, engine_url

    storage = args.storage or default_storage(args.run)
    if args.dashboard:
        print(f"pip install optuna-dashboard && optuna-dashboard {engine_url(storage)}")
        return 0
    budgets = [parse_budget(b) for b in args.budget]
    if args.devices:
        budgets += load_devices(args.devices)
    cfg = SearchConfig(run_dir=Path(args.run), budgets=budgets, storage=storage, table_size=args.table_size,
                       seed=args.seed, predictor=args.predictor, metric=args.target,
                       compare_predictors=args.compare_predictors, mode=args.mode, effort=args.effort,
                       generations=args.generations,
                       population=args.population, mutation_prob=args.mutation_prob,
                       crossover_prob=args.crossover_prob, nested=args.nested, rerank=args.rerank,
                       luts=parse_luts(args.lut),
                       calib_batches=args.calib_batches, batch_size=args.batch_size, val_limit=args.val_limit,
                       measure_only=args.measure_only, replace=args.replace, force=args.force,
                       measure_test=not args.no_test,
                       grace_period=args.grace_period,
                       heartbeat_interval=(max(1, args.grace_period // 4) if args.heartbeat_interval is None
                                           else args.heartbeat_interval),
                       stale_after=args.stale_after, progress=not args.quiet, workers=args.workers,
                       measure_device=args.measure_device)
    search(cfg)
    if not args.quiet:
        print(f"measurements: {storage} (open with: optuna-dashboard {engine_url(storage)})")
    return 0
