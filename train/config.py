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

from ofa.errors import OFAError
from ofa.io import read_yaml
from ofa.space import SearchSpace

DIMENSIONS = ("resolutions", "stem", "depths", "widths", "expands", "kernels", "heads")
WIDTH_DIMENSIONS = ("stem", "widths", "expands", "heads")  # the ones channel (and head) sorting serves

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "batch_size": 64,          # per process
    "num_workers": 0,
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
    path = Path(path)
    if not path.is_file():
        raise OFAError(f"config file {str(path)!r} does not exist")
    config = read_yaml(path)
    if not isinstance(config, dict):
        raise OFAError(f"config {str(path)!r} must be a YAML mapping (supernet:, data:, phases: ...)")
    return config


def resolve_config(config: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in and every field checked (phase sub-spaces are checked against the supernet later)."""
    known = set(DEFAULTS) | {"supernet", "timm", "data", "phases"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise OFAError(f"unknown config entry {unknown[0]!r}; allowed: {sorted(known)}")
    out = _merge(DEFAULTS, config)
    if "supernet" not in out and "timm" not in out:
        raise OFAError("the config needs `supernet: {name: ...}` (see `ofa info`) or `timm: {name, checkpoint_path}`")
    if "supernet" in out and "timm" in out:
        raise OFAError("give either `supernet:` or `timm:` in the config, not both")
    for key in ("supernet", "timm"):
        if key in out and (not isinstance(out[key], dict) or "name" not in out[key]):
            raise OFAError(f"`{key}:` must be a mapping with a `name`")
    data = out.get("data") or {"spec": "mnist5k"}
    if isinstance(data, str):
        data = {"spec": data}
    if not isinstance(data, dict) or "spec" not in data:
        raise OFAError("`data:` must be a dataset spec or a mapping {spec, root, seed}")
    out["data"] = {"spec": data["spec"], "root": data.get("root"), "seed": int(data.get("seed", 0)),
                   "download": bool(data.get("download", False)), **({"augment": data["augment"]}
                                                                      if data.get("augment") else {})}
    if out["mixed_precision"] not in ("no", "fp16", "bf16"):
        raise OFAError(f"mixed_precision must be one of no, fp16, bf16; got {out['mixed_precision']!r}")
    if out["log_with"] not in (None, "tensorboard"):
        raise OFAError(f"log_with must be null or tensorboard; got {out['log_with']!r}")
    for key in ("batch_size", "checkpoint_every", "keep_checkpoints", "gradient_accumulation_steps"):
        if not isinstance(out[key], int) or out[key] < 1:
            raise OFAError(f"{key} must be a positive integer, got {out[key]!r}")
    _check_num_random(out["num_random"], "")
    phases = out.get("phases")
    if not isinstance(phases, list) or not phases:
        raise OFAError("the config needs a non-empty `phases:` list (name, epochs, lr, warmup_epochs, allowed values)")
    names = set()
    for i, phase in enumerate(phases):
        if not isinstance(phase, dict):
            raise OFAError(f"phases[{i}] must be a mapping with name, epochs, lr")
        where = f"phase {phase.get('name', i)!r}"
        unknown = sorted(set(phase) - PHASE_KEYS)
        if unknown:
            raise OFAError(f"{where}: unknown key {unknown[0]!r}; allowed: {sorted(PHASE_KEYS)}")
        for key in ("name", "epochs", "lr"):
            if key not in phase:
                raise OFAError(f"{where}: missing `{key}`")
        if phase["name"] in names:
            raise OFAError(f"two phases are named {phase['name']!r}; phase names must be unique")
        names.add(phase["name"])
        if not isinstance(phase["epochs"], int) or phase["epochs"] < 1:
            raise OFAError(f"{where}: epochs must be a positive integer, got {phase['epochs']!r}")
        if not isinstance(phase["lr"], (int, float)) or phase["lr"] <= 0:
            raise OFAError(f"{where}: lr must be a positive number, got {phase['lr']!r}")
        phase.setdefault("warmup_epochs", 0)
        phase.setdefault("num_random", out["num_random"])  # once-for-all samples more subnets in later phases
        _check_num_random(phase["num_random"], f"{where}: ")
        # allowed values may sit under `space:` or directly in the phase
        space = dict(phase.pop("space", None) or {})
        for dim in DIMENSIONS:
            if dim in phase:
                space[dim] = phase.pop(dim)
        bad = sorted(set(space) - set(DIMENSIONS))
        if bad:
            raise OFAError(f"{where}: unknown elastic dimension {bad[0]!r}; allowed: {list(DIMENSIONS)}")
        phase["space"] = space
    if out["eval"].get("calib_images") is not None and int(out["eval"]["calib_images"]) < 1:
        raise OFAError("eval.calib_images must be positive")
    return out


def _check_num_random(value: Any, where: str) -> None:
    if not isinstance(value, int) or value < 0:
        raise OFAError(f"{where}num_random must be a non-negative integer, got {value!r}")


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
