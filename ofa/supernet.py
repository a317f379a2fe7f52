"""The base of every supernet: the active architecture, input checks, extraction, costs and description.

A family subclass builds its layers (its blocks with :data:`ofa.factory.DYNAMIC`) and implements ``_apply_arch``
(set every layer's active channels), ``_forward`` and ``channel_groups``; its ``plan`` (no tensors) knows the
space, static specs and costs. ``extract`` builds the family's dense network from the same blocks with plain
layers and copies the first channels in by name (elastic kernels folded, position embeddings resampled by the
modules' ``export_to``), so extraction is exact by construction.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from .data.stats import default_stats
from .errors import OFAError
from .layers import DynamicBatchNorm2d
from .registry import static_class
from .space import Arch, SearchSpace


def default_data_config(in_chans: int, resolution: int) -> dict[str, Any]:
    """Preprocessing recorded with a network until training replaces it with the dataset's own."""
    mean, std = default_stats(in_chans)
    return {"input_size": [in_chans, resolution, resolution], "mean": mean, "std": std,
            "interpolation": "bilinear", "crop_pct": 1.0}


class Supernet(nn.Module):
    family: str = ""
    config_keys: tuple[str, ...] = ()
    plan_class: type | None = None  # the family's tensor-free architecture definition
    classifier_name: str = ""  # the classifier layer's name (timm's: ``fc``, ``classifier``), whose outputs are classes

    @classmethod
    def make_plan(cls, **config: Any):
        """The plan (space, static specs, costs) of constructor arguments, without building any weights."""
        keys = set(cls.config_keys) - {"data_config", "origin"}
        return cls.plan_class(**{k: v for k, v in config.items() if k in keys})

    @classmethod
    def checked_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments checked against ``config_keys``, tuples as lists (the recorded config then equals
        what JSON gives back)."""
        unknown = sorted(set(config) - set(cls.config_keys))
        if unknown:
            raise OFAError(f"unknown argument {unknown[0]!r} for the {cls.family} family; "
                           f"allowed: {sorted(cls.config_keys)}")

        def as_lists(v):
            return [as_lists(x) for x in v] if isinstance(v, (list, tuple)) else v

        return {k: as_lists(v) for k, v in config.items()}

    def __init__(self, plan, config: dict[str, Any], name: str | None, data_config: dict | None,
                 origin: dict | None) -> None:
        super().__init__()
        self.plan = plan
        self.name = name or self.family
        self.config = copy.deepcopy(config)
        self.origin = copy.deepcopy(origin) or {}
        self.data_config = copy.deepcopy(data_config) or default_data_config(
            plan.in_chans, max(plan.space.resolutions))
        self._cost_cache: dict[Arch, tuple[int, int]] = {}
        self.active_arch: Arch = plan.space.largest()

    # -- the active architecture -----------------------------------------------------------------------------
    @property
    def space(self) -> SearchSpace:
        return self.plan.space

    @property
    def in_chans(self) -> int:
        return self.plan.in_chans

    @property
    def num_classes(self) -> int:
        return self.plan.num_classes

    def set_active(self, arch: Arch | Mapping) -> Arch:
        """Run as ``arch`` from now on (validated against the space; a dict is accepted)."""
        arch = self.space.validate(arch)
        self._apply_arch(arch)
        # Stored BN statistics belong to the largest arch: other archs train on batch statistics only.
        is_largest = arch == self.space.largest()
        for m in self.modules():
            if isinstance(m, DynamicBatchNorm2d):
                m.update_running_stats = is_largest
        self.active_arch = arch
        return arch

    @contextlib.contextmanager
    def active(self, arch: Arch | Mapping) -> Iterator[Arch]:
        """``with net.active(arch):`` runs as ``arch`` and restores the previous arch afterwards."""
        previous = self.active_arch
        try:
            yield self.set_active(arch)
        finally:
            self.set_active(previous)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.active_arch.resolution
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise OFAError(f"expected an input of shape (N, {self.in_chans}, {r}, {r}), got {tuple(x.shape)}")
        if x.shape[2] != r or x.shape[3] != r:
            raise OFAError(f"input is {x.shape[2]}x{x.shape[3]} but the active arch runs at resolution {r}; "
                           f"resize the input to {r}x{r} or activate an arch with that resolution")
        return self._forward(x)

    # -- extraction ------------------------------------------------------------------------------------------
    def static_description(self, arch: Arch) -> dict[str, Any]:
        spec = self.plan.static_spec(arch)
        macs, params = self.costs(arch)
        data = copy.deepcopy(self.data_config)
        data["input_size"] = [self.in_chans, arch.resolution, arch.resolution]
        return {"kind": "static", "family": self.family, "spec": spec, "arch": arch.to_dict(),
                "supernet": self.name, "data_config": data, "macs": macs, "params": params,
                "origin": self.origin}

    def extract(self, arch: Arch | Mapping | None = None, calib_batches: Iterable | None = None,
                num_batches: int | None = None) -> nn.Module:
        """A dense network of plain layers computing what this supernet computes as ``arch``.

        Its BN statistics are sliced from the supernet's (the largest arch's) unless ``calib_batches`` is given,
        in which case they are re-estimated for this arch.
        """
        arch = self.active_arch if arch is None else self.space.validate(arch)
        static = static_class(self.family)(self.static_description(arch))
        source = self.state_dict()
        # Modules whose dense weights are not a slice of their own (elastic kernels, a resampled position
        # embedding) write them with export_to(dense module of the same name).
        exporters = {name: m for name, m in self.named_modules() if hasattr(m, "export_to")}
        with torch.no_grad():
            for key, target in static.state_dict().items():
                target.copy_(source[key][tuple(slice(0, n) for n in target.shape)])
            for name, target in static.named_modules():
                if name in exporters:
                    exporters[name].export_to(target)
        static.to(next(self.parameters()).device)
        static.train(self.training)
        if calib_batches is not None:
            from .bn import calibrate_bn

            calibrate_bn(static, calib_batches, num_batches=num_batches)
        return static

    # -- costs and description -------------------------------------------------------------------------------
    def costs(self, arch: Arch | Mapping | None = None) -> tuple[int, int]:
        """(MACs, parameters) of ``arch`` (default: the active arch), analytic and cached."""
        arch = self.active_arch if arch is None else self.space.validate(arch)  # fast for this space's archs
        cached = self._cost_cache.get(arch)
        if cached is None:
            cached = self.plan.costs(arch)
            if len(self._cost_cache) > 100_000:
                self._cost_cache.clear()
            self._cost_cache[arch] = cached
        return cached

    def description(self) -> dict[str, Any]:
        return {"kind": "supernet", "family": self.family, "name": self.name, "config": self.config,
                "space": self.space.to_dict(), "data_config": self.data_config, "origin": self.origin}

    def channel_groups(self) -> list:
        raise NotImplementedError
