"""Training configuration: a YAML file, validated and resolved into a plain dict that the run directory records.

A config names the supernet (``supernet: {name, ...kwargs}`` or ``timm: {name, checkpoint_path}``), the data
(``data: {spec, root, seed}``), the optimisation settings and a list of ``phases``. Each phase has a ``name``,
``epochs``, ``lr``, ``warmup_epochs``, optionally ``num_random`` (else the top-level one) and its sub-space: per
elastic dimension (``resolutions``, ``stem``, ``depths``, ``widths``, ``expands``, ``kernels``, ``heads``) a list of
allowed values (flat, or one list per stage) or ``all``; a dimension a phase does not mention stays at its largest
value, so phases open the space step by step.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from ofa.configs import resolve
from ofa.data import check_dataset_spec
from ofa.errors import OFAError
from ofa.io import atomic_write, read_yaml
from ofa.sorting import CRITERIA
from ofa.space import SearchSpace

from .checks import (
    BOOLEAN,
    MAPPING,
    OPTIONAL_STRING,
    STRING,
    Check,
    check_section,
    choice,
    integer,
    keyword_names,
    number,
)

DIMENSIONS = ("resolutions", "stem", "depths", "widths", "expands", "kernels", "heads")
WIDTH_DIMENSIONS = ("stem", "widths", "expands", "heads")  # the ones channel (and head) sorting serves

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "batch_size": 64,          # per process
    "num_workers": 0,
    "threads": None,           # intra-op threads per process; null = usable cores / local processes
    "augment": True,
    "mixed_precision": "no",   # no | fp16 | bf16
    "cpu": False,              # force CPU even when an accelerator exists
    "channels_last": False,    # NHWC weights and activations: CPU depthwise-conv backward runs ~3x faster
    "gradient_accumulation_steps": 1,  # accelerate's accumulation over batches (not over subnets)
    "optimizer": {"opt": "sgd", "momentum": 0.9, "weight_decay": 3e-5, "filter_bias_and_bn": True},
    "scheduler": {"sched": "cosine", "warmup_lr": 1e-4, "min_lr": 0.0},
    "label_smoothing": 0.1,
    "num_random": 2,           # random subnets per step besides the largest and the smallest
    "kd_ratio": 0.0,           # teacher KD weight (teacher = the network after the first phase); 0 turns it off
    "kd_temperature": 1.0,
    "sort_criterion": "l1",    # channel sorting before each phase that widens the elastic width
    "checkpoint_every": 200,   # steps; plus every epoch end
    "keep_checkpoints": 2,
    "eval": {"calib_images": 500, "val_images": None, "batch_size": 256},
    "log_with": None,          # null | tensorboard: also log losses, lr and validation top-1 to RUN/tensorboard/
    "log_subnets": False,      # write logs/rank{R}.json: the subnets each process trained, its final weights' hash
    "max_steps_per_epoch": None,  # cap (for smoke tests); null = the whole training split
}
PHASE_KEYS = {"name", "epochs", "lr", "warmup_epochs", "num_random", "space"} | set(DIMENSIONS)


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    path = resolve(path)  # a file, or the name of a config shipped with the package (tiny_cpu)
    config = read_yaml(path)
    if not isinstance(config, dict):
        raise OFAError(f"config {str(path)!r} must be a YAML mapping (supernet:, data:, phases: ...)")
    return config


def run_config(config: dict[str, Any] | str | os.PathLike | None, out: str | os.PathLike | None,
               resume: str | os.PathLike | None, overrides: dict[str, Any] | None) -> tuple[dict[str, Any], Path]:
    """The resolved config and run directory that ``train(config, out, resume, overrides)`` means: a new run
    directory with the given config, or a run to resume with its own config.yaml."""
    if resume is not None:
        run_dir = Path(resume)
        if config is not None:
            raise OFAError("--resume continues a run with its own config.yaml; do not pass --config as well")
        if not (run_dir / "config.yaml").is_file():
            raise OFAError(f"{run_dir} is not a run directory (no config.yaml); start a run with --config and --out")
        raw = read_config(run_dir / "config.yaml")
        if "timm" in raw:
            raw.pop("supernet", None)  # recorded for readers; the run is rebuilt from its timm entry
    else:
        if config is None or out is None:
            raise OFAError("give --config CONFIG and --out RUN (or --resume RUN)")
        raw = read_config(config) if not isinstance(config, dict) else copy.deepcopy(config)
        run_dir = Path(out)
        if (run_dir / "config.yaml").exists() or (run_dir / "checkpoints").exists():
            raise OFAError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose "
                           "another --out")
    if overrides:
        raw.update({k: v for k, v in overrides.items() if v is not None})
    return resolve_config(raw), run_dir


TOP_CHECKS = {
    "seed": integer(0), "batch_size": integer(1), "num_workers": integer(0), "augment": BOOLEAN,
    "mixed_precision": choice(("no", "fp16", "bf16")), "cpu": BOOLEAN, "channels_last": BOOLEAN,
    "threads": integer(1, nullable=True), "gradient_accumulation_steps": integer(1),
    "label_smoothing": number(0, 1, high_open=True), "num_random": integer(0), "kd_ratio": number(0, 1),
    "kd_temperature": number(0, low_open=True), "sort_criterion": choice(CRITERIA), "checkpoint_every": integer(1),
    "keep_checkpoints": integer(1), "log_subnets": BOOLEAN,
    "log_with": Check(lambda v: v in (None, "tensorboard"), "null or tensorboard"),
    "max_steps_per_epoch": integer(1, nullable=True),
    "optimizer": MAPPING, "scheduler": MAPPING, "eval": MAPPING, "supernet": MAPPING, "timm": MAPPING,
    "data": Check(lambda v: isinstance(v, (str, dict)), "a dataset spec or a mapping {spec, root, seed}"),
    "phases": Check(lambda v: isinstance(v, list) and bool(v),
                    "a non-empty list of phases (name, epochs, lr, warmup_epochs, allowed values)"),
}
DATA_CHECKS = {"spec": STRING, "root": OPTIONAL_STRING, "seed": integer(0), "download": BOOLEAN,
               "augment": MAPPING, "check_images": BOOLEAN}
EVAL_CHECKS = {"calib_images": integer(1, nullable=True), "val_images": integer(1, nullable=True),
               "batch_size": integer(1)}
TIMM_CHECKS = {"name": STRING, "checkpoint_path": OPTIONAL_STRING, "skip_first_phase": BOOLEAN}
PHASE_CHECKS = {"name": Check(lambda v: isinstance(v, (str, int)) and v != "", "a non-empty name"),
                "epochs": integer(1), "lr": number(0, low_open=True), "warmup_epochs": integer(0),
                "num_random": integer(0), "space": MAPPING}
# create_transform arguments the data sets itself, or that only concern evaluation or token-packing pipelines
TRANSFORM_OWNED = {"input_size", "is_training", "mean", "std", "use_prefetcher", "separate", "normalize", "crop_pct",
                   "crop_mode", "crop_border_pixels", "tf_preprocessing", "naflex", "patch_size", "max_seq_len",
                   "patchify", "patchify_channels_last", "patchify_flatten"}
SET_BY_PHASES = {"num_epochs", "warmup_epochs", "updates_per_epoch", "step_on_epochs"}  # scheduler args we own


def resolve_config(config: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in and every value checked (phase sub-spaces are checked against the supernet later)."""
    check_section(config, TOP_CHECKS, "config")
    out = _merge(DEFAULTS, config)
    if "supernet" not in out and "timm" not in out:
        raise OFAError("the config needs `supernet: {name: ...}` (see `ofa info`) or `timm: {name, checkpoint_path}`")
    if "supernet" in out and "timm" in out:
        raise OFAError("give either `supernet:` or `timm:` in the config, not both")
    for key in ("supernet", "timm"):
        if key in out and not isinstance(out[key].get("name"), str):
            raise OFAError(f"`{key}:` must be a mapping with a `name`")
    if "timm" in out:  # the family importers' own keyword arguments are checked when the supernet is built
        check_section({k: v for k, v in out["timm"].items() if k in TIMM_CHECKS}, TIMM_CHECKS, "timm")
    data = out["data"] if "data" in config else {"spec": "mnist5k"}
    data = {"spec": data} if isinstance(data, str) else data
    check_section(data, DATA_CHECKS, "data")
    if "spec" not in data:
        raise OFAError("`data:` needs a `spec` (mnist5k | imagefolder:PATH | cifar10:PATH | ...)")
    check_dataset_spec(data["spec"])
    if data.get("augment"):
        from timm.data import create_transform

        check_section(data["augment"], {}, "data.augment",
                      extra=keyword_names(create_transform, exclude=TRANSFORM_OWNED))
    out["data"] = {"spec": data["spec"], "root": data.get("root"), "seed": data.get("seed", 0),
                   "download": data.get("download", False),
                   **({"augment": data["augment"]} if data.get("augment") else {}),
                   **({"check_images": True} if data.get("check_images") else {})}
    check_section(out["eval"], EVAL_CHECKS, "eval")
    _check_optimizer(out["optimizer"])
    _check_scheduler(out["scheduler"])
    if "phases" not in out:
        raise OFAError("the config needs a non-empty `phases:` list (name, epochs, lr, warmup_epochs, allowed values)")
    names = set()
    for i, phase in enumerate(out["phases"]):
        if not isinstance(phase, dict):
            raise OFAError(f"phases[{i}] must be a mapping with name, epochs, lr")
        where = f"phase {phase.get('name', i)!r}"
        unknown = sorted(set(phase) - PHASE_KEYS)
        if unknown:
            raise OFAError(f"{where}: unknown key {unknown[0]!r}; allowed: {sorted(PHASE_KEYS)}")
        for key in ("name", "epochs", "lr"):
            if key not in phase:
                raise OFAError(f"{where}: missing `{key}`")
        check_section({k: v for k, v in phase.items() if k in PHASE_CHECKS}, PHASE_CHECKS, where)
        if phase["name"] in names:
            raise OFAError(f"two phases are named {phase['name']!r}; phase names must be unique")
        names.add(phase["name"])
        phase.setdefault("warmup_epochs", 0)
        phase.setdefault("num_random", out["num_random"])  # once-for-all samples more subnets in later phases
        # allowed values may sit under `space:` or directly in the phase
        space = dict(phase.pop("space", None) or {})
        for dim in DIMENSIONS:
            if dim in phase:
                space[dim] = phase.pop(dim)
        bad = sorted(set(space) - set(DIMENSIONS))
        if bad:
            raise OFAError(f"{where}: unknown elastic dimension {bad[0]!r}; allowed: {list(DIMENSIONS)}")
        phase["space"] = space
    return out


def _check_optimizer(args: dict[str, Any]) -> None:
    """timm builds the optimizer: a throwaway one on one parameter checks the name and every keyword now."""
    import timm.optim
    import torch

    opt = args.get("opt", "sgd")
    if not isinstance(opt, str) or opt.lower() not in timm.optim.list_optimizers():
        raise OFAError(f"optimizer: opt {opt!r} is not a timm optimizer; allowed: e.g. sgd, momentum, adamw, "
                       "lamb, lion (all: timm.optim.list_optimizers())")
    for key, check in (("weight_decay", number(0)), ("momentum", number(0, 1, high_open=True))):
        if key in args and not check.test(args[key]):
            raise OFAError(f"optimizer: {key} must be {check.allowed}; got {args[key]!r}")
    try:
        timm.optim.create_optimizer_v2(torch.nn.Linear(1, 1), lr=0.1, **args)
    except (TypeError, ValueError) as e:
        raise OFAError(f"optimizer: {e} (timm.optim.create_optimizer_v2 with opt={opt!r})") from None


def _check_scheduler(args: dict[str, Any]) -> None:
    import timm.optim
    import timm.scheduler
    import torch

    owned = sorted(SET_BY_PHASES & set(args))
    if owned:
        raise OFAError(f"scheduler: {owned[0]} is set per phase (epochs, warmup_epochs), not here")
    for key in ("warmup_lr", "min_lr"):
        if key in args and not number(0).test(args[key]):
            raise OFAError(f"scheduler: {key} must be a number >= 0; got {args[key]!r}")
    optimizer = timm.optim.create_optimizer_v2(torch.nn.Linear(1, 1), opt="sgd", lr=0.1)
    try:
        timm.scheduler.create_scheduler_v2(optimizer, num_epochs=2, step_on_epochs=False, updates_per_epoch=1,
                                           **args)
    except (TypeError, ValueError) as e:
        raise OFAError(f"scheduler: {e} (allowed sched: cosine, tanh, step, multistep, plateau, poly, rsqrt, "
                       "constant)") from None


def phase_space(space: SearchSpace, phase: dict[str, Any]) -> SearchSpace:
    """The phase's sub-space: listed values (or ``all``) per dimension; unlisted dimensions at their largest."""
    allowed: dict[str, Any] = {}
    for dim in DIMENSIONS:
        current = getattr(space, dim)
        value = phase["space"].get(dim)
        if current is None:
            if value is not None:
                raise OFAError(f"phase {phase['name']!r}: this supernet has no elastic {dim!r} dimension")
            continue
        if value == "all":
            continue
        if value is None:
            allowed[dim] = [max(current)] if dim in ("resolutions", "stem") else [[max(c)] for c in current]
            continue
        flat = isinstance(value, (list, tuple)) and not any(isinstance(v, (list, tuple)) for v in value)
        if flat and dim not in ("resolutions", "stem"):
            # a flat list applies to every stage; each value must exist in at least one stage
            everywhere = sorted({c for stage in current for c in stage})
            for v in value:
                if not any(isinstance(v, (int, float)) and abs(float(v) - float(c)) < 1e-9 for c in everywhere):
                    raise OFAError(f"phase {phase['name']!r}: {dim} value {v!r} is not in the space; "
                                   f"allowed: {everywhere}")
        allowed[dim] = value
    try:
        return space.restrict(**allowed)
    except OFAError as e:
        raise OFAError(f"phase {phase['name']!r}: {e}") from None


def widens(previous: SearchSpace | None, current: SearchSpace) -> bool:
    """Whether ``current`` allows a width (stem, stage width, expand or head count) value that ``previous`` did
    not."""
    if previous is None:
        return False
    for dim in WIDTH_DIMENSIONS:
        a, b = getattr(previous, dim), getattr(current, dim)
        if a is None or b is None:
            continue
        if dim == "stem":
            if set(b) - set(a):
                return True
        elif any(set(cb) - set(ca) for ca, cb in zip(a, b)):
            return True
    return False


def write_config(run_dir: Path, config: dict[str, Any], net: Any) -> None:
    """RUN/config.yaml: the resolved config, with what the supernet became (classes, channels, timm origin)."""
    first = ("supernet", "timm", "data", "phases")  # the entries a reader looks for, on top
    record = {k: copy.deepcopy(config[k]) for k in first if k in config}
    record.update({k: copy.deepcopy(v) for k, v in config.items() if k not in first})
    if "supernet" in record:
        record["supernet"].update(num_classes=net.num_classes, in_chans=net.in_chans)
    else:  # a timm start: record what it became, too
        record["supernet"] = {"name": net.name, "num_classes": net.num_classes, "in_chans": net.in_chans,
                              "from_timm": record["timm"]["name"]}
    text = yaml.safe_dump(record, sort_keys=False)
    atomic_write(run_dir / "config.yaml", lambda tmp: Path(tmp).write_text(text))
