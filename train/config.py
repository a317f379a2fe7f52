"""Training configuration: a YAML file (or a dict) read into a :class:`TrainConfig`, each value checked when the
config is made; ``TrainConfig.to_dict`` is the resolved plain dict that the run directory records.

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
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from ofa.configs import resolve
from ofa.data import check_dataset_spec
from ofa.errors import OFAError
from ofa.io import atomic_write, read_yaml
from ofa.rundir import RunDir
from ofa.sorting import CRITERIA
from ofa.space import SearchSpace

from .checks import (
    BOOLEAN,
    MAPPING,
    OPTIONAL_STRING,
    STRING,
    Check,
    check_optimizer,
    check_scheduler,
    check_section,
    choice,
    integer,
    keyword_names,
    number,
)

DIMENSIONS = ("resolutions", "stem", "depths", "widths", "expands", "kernels", "heads")
WIDTH_DIMENSIONS = ("stem", "widths", "expands", "heads")  # the ones channel (and head) sorting serves
PHASE_KEYS = {"name", "epochs", "lr", "warmup_epochs", "num_random", "space"} | set(DIMENSIONS)

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
DEFAULT_OPTIMIZER = {"opt": "sgd", "momentum": 0.9, "weight_decay": 3e-5, "filter_bias_and_bn": True}
DEFAULT_SCHEDULER = {"sched": "cosine", "warmup_lr": 1e-4, "min_lr": 0.0}


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _given(section: Any) -> dict[str, Any]:
    """A section's values to check: all but the ``None`` of fields that default to ``None`` (not given)."""
    values = {f.name: getattr(section, f.name) for f in fields(section)}
    return {k: v for k, v in values.items() if v is not None or section.__dataclass_fields__[k].default is not None}


@dataclass
class DataConfig:
    """``data:`` the dataset spec and how to read it; a bare string is the spec."""

    spec: str = "mnist5k"
    root: str | None = None
    seed: int = 0                        # the train/calib/val/test split's seed
    download: bool = False
    augment: dict[str, Any] | None = None  # timm create_transform arguments for the training batches
    check_images: bool = False           # open every image before training (skips and lists unreadable ones)

    @classmethod
    def from_dict(cls, values: str | dict[str, Any]) -> DataConfig:
        values = {"spec": values} if isinstance(values, str) else values
        check_section(values, DATA_CHECKS, "data")
        if "spec" not in values:
            raise OFAError("`data:` needs a `spec` (mnist5k | imagefolder:PATH | cifar10:PATH | ...)")
        return cls(**copy.deepcopy(values))

    def __post_init__(self) -> None:
        check_section(_given(self), DATA_CHECKS, "data")
        check_dataset_spec(self.spec)
        if self.augment:
            from timm.data import create_transform

            check_section(self.augment, {}, "data.augment",
                          extra=keyword_names(create_transform, exclude=TRANSFORM_OWNED))

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "root": self.root, "seed": self.seed, "download": self.download,
                **({"augment": copy.deepcopy(self.augment)} if self.augment else {}),
                **({"check_images": True} if self.check_images else {})}


@dataclass
class EvalConfig:
    """``eval:`` the end-of-epoch measurement of the largest, middle and smallest subnet."""

    calib_images: int | None = 500  # BatchNorm re-estimation images per subnet; null = the whole calib split
    val_images: int | None = None   # null = the whole validation split
    batch_size: int = 256

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EvalConfig:
        check_section(values, EVAL_CHECKS, "eval")
        return cls(**values)

    def __post_init__(self) -> None:
        check_section(_given(self), EVAL_CHECKS, "eval")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Phase:
    """One phase of progressive shrinking: its schedule and the sub-space it trains (``space``: allowed values
    per elastic dimension, or ``all``; a dimension it does not name stays at its largest value)."""

    name: str | int
    epochs: int
    lr: float
    warmup_epochs: int = 0
    num_random: int | None = None  # null: the config's; once-for-all samples more subnets in later phases
    space: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: Any, index: int = 0) -> Phase:
        if not isinstance(values, dict):
            raise OFAError(f"phases[{index}] must be a mapping with name, epochs, lr")
        where = f"phase {values.get('name', index)!r}"
        unknown = sorted(set(values) - PHASE_KEYS)
        if unknown:
            raise OFAError(f"{where}: unknown key {unknown[0]!r}; allowed: {sorted(PHASE_KEYS)}")
        for key in ("name", "epochs", "lr"):
            if key not in values:
                raise OFAError(f"{where}: missing `{key}`")
        check_section({k: v for k, v in values.items() if k in PHASE_CHECKS}, PHASE_CHECKS, where)
        values = copy.deepcopy(values)
        # allowed values may sit under `space:` or directly in the phase
        space = dict(values.pop("space", None) or {})
        for dim in DIMENSIONS:
            if dim in values:
                space[dim] = values.pop(dim)
        return cls(**values, space=space)

    def __post_init__(self) -> None:
        where = f"phase {self.name!r}"
        check_section(_given(self), PHASE_CHECKS, where)
        bad = sorted(set(self.space) - set(DIMENSIONS))
        if bad:
            raise OFAError(f"{where}: unknown elastic dimension {bad[0]!r}; allowed: {list(DIMENSIONS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainConfig:
    """A whole training config, every value checked when it is made (``from_dict`` also rejects unknown keys and
    explicit nulls where a value is needed). Sections may be given as the YAML has them (``data`` a spec or a
    mapping, ``eval`` and each phase a mapping): they become their dataclasses; ``optimizer`` and ``scheduler``
    stay timm's keyword arguments, over these defaults. ``to_dict`` is the resolved plain config that
    ``RUN/config.yaml`` records and ``from_dict`` reads back."""

    seed: int = 0
    batch_size: int = 64          # per process
    num_workers: int = 0
    threads: int | None = None    # intra-op threads per process; null = usable cores / local processes
    augment: bool = True
    mixed_precision: str = "no"   # no | fp16 | bf16
    cpu: bool = False             # force CPU even when an accelerator exists
    channels_last: bool = False   # NHWC weights and activations: CPU depthwise-conv backward runs ~3x faster
    gradient_accumulation_steps: int = 1  # accelerate's accumulation over batches (not over subnets)
    optimizer: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_OPTIMIZER))  # timm create_optimizer_v2
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SCHEDULER))  # timm create_scheduler_v2
    label_smoothing: float = 0.1
    num_random: int = 2           # random subnets per step besides the largest and the smallest
    kd_ratio: float = 0.0         # teacher KD weight (teacher = the network after the first phase); 0 turns it off
    kd_temperature: float = 1.0
    sort_criterion: str = "l1"    # channel sorting before each phase that widens the elastic width
    checkpoint_every: int = 200   # steps; plus every epoch end
    keep_checkpoints: int = 2
    eval: EvalConfig = field(default_factory=EvalConfig)
    log_with: str | None = None   # null | tensorboard: also log losses, lr and validation top-1 to RUN/tensorboard/
    log_subnets: bool = False     # write logs/rank{R}.json: the subnets each process trained, its final weights' hash
    max_steps_per_epoch: int | None = None  # cap (for smoke tests); null = the whole training split
    # what to train on what (config.yaml lists them first)
    supernet: dict[str, Any] | None = None  # {name, ...kwargs} of ofa.create_supernet (classes/channels from data)
    timm: dict[str, Any] | None = None      # or {name, checkpoint_path, skip_first_phase, ...importer kwargs}
    data: DataConfig = field(default_factory=DataConfig)
    phases: list[Phase] | None = None       # required

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        check_section(values, TOP_CHECKS, "config")
        return cls(**copy.deepcopy(values))

    def __post_init__(self) -> None:
        typed = (DataConfig, EvalConfig)
        check_section({k: v for k, v in _given(self).items() if not isinstance(v, typed)}, TOP_CHECKS, "config")
        if self.supernet is None and self.timm is None:
            raise OFAError("the config needs `supernet: {name: ...}` (see `ofa info`) or `timm: {name, checkpoint_path}`")
        if self.supernet is not None and self.timm is not None:
            raise OFAError("give either `supernet:` or `timm:` in the config, not both")
        for key in ("supernet", "timm"):
            entry = getattr(self, key)
            if entry is not None and not isinstance(entry.get("name"), str):
                raise OFAError(f"`{key}:` must be a mapping with a `name`")
        if self.timm is not None:  # the family importers' own keyword arguments are checked when the supernet is built
            check_section({k: v for k, v in self.timm.items() if k in TIMM_CHECKS}, TIMM_CHECKS, "timm")
        if not isinstance(self.data, DataConfig):
            self.data = DataConfig.from_dict(self.data)
        if not isinstance(self.eval, EvalConfig):
            self.eval = EvalConfig.from_dict(self.eval)
        self.optimizer = _merge(DEFAULT_OPTIMIZER, self.optimizer)
        check_optimizer(self.optimizer)
        self.scheduler = _merge(DEFAULT_SCHEDULER, self.scheduler)
        check_scheduler(self.scheduler)
        if self.phases is None:
            raise OFAError("the config needs a non-empty `phases:` list (name, epochs, lr, warmup_epochs, allowed "
                           "values)")
        phases, names = [], set()
        for i, phase in enumerate(self.phases):
            phase = phase if isinstance(phase, Phase) else Phase.from_dict(phase, i)
            if phase.name in names:
                raise OFAError(f"two phases are named {phase.name!r}; phase names must be unique")
            names.add(phase.name)
            phases.append(replace(phase, num_random=self.num_random) if phase.num_random is None else phase)
        self.phases = phases

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("supernet", "timm") and value is None:
                continue
            if f.name == "phases":
                value = [phase.to_dict() for phase in value]
            elif isinstance(value, (DataConfig, EvalConfig)):
                value = value.to_dict()
            out[f.name] = copy.deepcopy(value)
        return out


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    path = resolve(path)  # a file, or the name of a config shipped with the package (tiny_cpu)
    config = read_yaml(path)
    if not isinstance(config, dict):
        raise OFAError(f"config {str(path)!r} must be a YAML mapping (supernet:, data:, phases: ...)")
    return config


def run_config(config: TrainConfig | dict[str, Any] | str | os.PathLike | None, out: str | os.PathLike | None,
               resume: str | os.PathLike | None, overrides: dict[str, Any] | None) -> tuple[TrainConfig, Path]:
    """The config and run directory that ``train(config, out, resume, overrides)`` means: a new run
    directory with the given config, or a run to resume with its own config.yaml."""
    if resume is not None:
        run_dir = Path(resume)
        paths = RunDir(run_dir)
        if config is not None:
            raise OFAError("--resume continues a run with its own config.yaml; do not pass --config as well")
        if not paths.config.is_file():
            raise OFAError(f"{run_dir} is not a run directory (no config.yaml); start a run with --config and --out")
        raw = read_config(paths.config)
        if "timm" in raw:
            raw.pop("supernet", None)  # recorded for readers; the run is rebuilt from its timm entry
    else:
        if config is None or out is None:
            raise OFAError("give --config CONFIG and --out RUN (or --resume RUN)")
        if isinstance(config, TrainConfig):
            raw = config.to_dict()
        else:
            raw = copy.deepcopy(config) if isinstance(config, dict) else read_config(config)
        run_dir = Path(out)
        paths = RunDir(run_dir)
        if paths.config.exists() or paths.checkpoints.exists():
            raise OFAError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose "
                           "another --out")
    if overrides:
        raw.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(raw), run_dir


def resolve_config(config: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in and every value checked (phase sub-spaces are checked against the supernet later): the
    plain dict of :class:`TrainConfig`."""
    return TrainConfig.from_dict(config).to_dict()


def phase_space(space: SearchSpace, phase: Phase | dict[str, Any]) -> SearchSpace:
    """The phase's sub-space: listed values (or ``all``) per dimension; unlisted dimensions at their largest.
    ``phase`` is a :class:`Phase` or its dict (``name`` and ``space``)."""
    name, values = (phase.name, phase.space) if isinstance(phase, Phase) else (phase["name"], phase["space"])
    allowed: dict[str, Any] = {}
    for dim in DIMENSIONS:
        current = getattr(space, dim)
        value = values.get(dim)
        if current is None:
            if value is not None:
                raise OFAError(f"phase {name!r}: this supernet has no elastic {dim!r} dimension")
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
                    raise OFAError(f"phase {name!r}: {dim} value {v!r} is not in the space; "
                                   f"allowed: {everywhere}")
        allowed[dim] = value
    try:
        return space.restrict(**allowed)
    except OFAError as e:
        raise OFAError(f"phase {name!r}: {e}") from None


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


def write_config(run_dir: Path, config: TrainConfig | dict[str, Any], net: Any) -> None:
    """RUN/config.yaml: the resolved config, with what the supernet became (classes, channels, timm origin)."""
    config = config.to_dict() if isinstance(config, TrainConfig) else config
    first = ("supernet", "timm", "data", "phases")  # the entries a reader looks for, on top
    record = {k: copy.deepcopy(config[k]) for k in first if k in config}
    record.update({k: copy.deepcopy(v) for k, v in config.items() if k not in first})
    if "supernet" in record:
        record["supernet"].update(num_classes=net.num_classes, in_chans=net.in_chans)
    else:  # a timm start: record what it became, too
        record["supernet"] = {"name": net.name, "num_classes": net.num_classes, "in_chans": net.in_chans,
                              "from_timm": record["timm"]["name"]}
    text = yaml.safe_dump(record, sort_keys=False)
    atomic_write(RunDir(run_dir).config, lambda tmp: Path(tmp).write_text(text))
