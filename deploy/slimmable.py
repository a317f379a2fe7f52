"""A runtime-slimmable network: one set of weights, several nested widths, switched in constant time.

Given nested dense subnets (each contained in the next: a prefix of its channels and blocks), the network stores
the largest one's weights once, plus every width's own BatchNorm statistics (a subnet's statistics are not a
slice of a larger one's, so each width carries its calibrated ones). Every view of the weights each width needs
is prepared once; ``set_width(i | name)`` only changes an index, so a switch copies and allocates nothing.
At every width the outputs equal the corresponding extracted dense network's.

``LatencyController`` picks, per call, the widest width whose measured latency meets a target (a device under
load or on battery can lower the target at run time).

Switching lives in PyTorch. For other runtimes export one ONNX file per width (``ofa deploy`` writes one per
device).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from ofa.errors import OFAError, WeightsError
from ofa.io import atomic_write, read_json
from ofa.registry import static_class

FORMAT = "ofa-slimmable/1"
_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _is_stat(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in _STATS


def _check_nested(small: dict, large: dict, where: str) -> None:
    """Raise OFAError unless the dense spec ``small`` is a prefix of ``large`` (channels and blocks)."""
    for field in ("family", "block", "stem_type", "in_chans", "num_classes"):
        if small.get(field) != large.get(field):
            raise OFAError(f"{where}: {field} differs ({small.get(field)!r} vs {large.get(field)!r}); "
                           "slimmable widths must come from one supernet")
    if small["stem"] > large["stem"] or len(small["stages"]) != len(large["stages"]):
        raise OFAError(f"{where}: the stem or the number of stages is not nested")
    for s, (a, b) in enumerate(zip(small["stages"], large["stages"])):
        if len(a) > len(b):
            raise OFAError(f"{where}: stage {s} has {len(a)} blocks, more than the next width's {len(b)}; "
                           "widths must be ordered smallest first, each contained in the next")
        for i, (x, y) in enumerate(zip(a, b)):
            if x[0] > y[0] or x[1] > y[1] or x[2] > y[2] or x[3:] != y[3:]:
                raise OFAError(f"{where}: block {s}.{i} {x[:3]} is not contained in the next width's {y[:3]}; "
                               "widths, expands and depths must be prefixes of the next width's")


class SlimmableNet(nn.Module):
    """Nested dense ResNets sharing one set of weights; ``set_width(i | name)`` switches between them."""

    def __init__(self, descriptions: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None,
                 latency_ms: Sequence[float] | None = None) -> None:
        super().__init__()
        if not descriptions:
            raise OFAError("a SlimmableNet needs at least one width")
        self.descriptions = [copy.deepcopy(dict(d)) for d in descriptions]
        specs = [d["spec"] for d in self.descriptions]
        if specs[-1].get("family") != "resnet":
            raise OFAError(f"SlimmableNet supports the resnet family, got {specs[-1].get('family')!r}")
        for i in range(len(specs) - 1):
            _check_nested(specs[i], specs[i + 1], f"width {i} -> {i + 1}")
        self.names = list(names) if names is not None else [f"width{i}" for i in range(len(specs))]
        if len(self.names) != len(specs) or len(set(self.names)) != len(self.names):
            raise OFAError(f"give one distinct name per width ({len(specs)} widths), got {self.names}")
        self._index_of = {name: i for i, name in enumerate(self.names)}
        self.latency_ms = list(latency_ms) if latency_ms is not None else None
        # The largest width's dense network holds every weight; its BN statistics are replaced per width.
        self.body = static_class("resnet")(self.descriptions[-1])
        self._bns = [(name, m) for name, m in self.body.named_modules() if isinstance(m, nn.BatchNorm2d)]
        n = len(specs)
        for name, bn in self._bns:
            key = name.replace(".", "__")
            self.register_buffer(f"mean__{key}", torch.zeros(n, bn.num_features))
            self.register_buffer(f"var__{key}", torch.ones(n, bn.num_features))
        self._index = n - 1
        self._plans: list | None = None

    # -- widths --------------------------------------------------------------------------------------------------
    @property
    def num_widths(self) -> int:
        return len(self.descriptions)

    @property
    def width(self) -> int:
        return self._index

    @property
    def resolution(self) -> int:
        return self.descriptions[self._index]["spec"]["resolution"]

    def set_width(self, width: int | str) -> int:
        """Run as width ``width`` (an index, smallest first, or a name) from now on: constant time, no copies."""
        index = self._index_of.get(width) if isinstance(width, str) else width
        if index is None or not isinstance(index, int) or not 0 <= index < len(self.descriptions):
            raise OFAError(f"unknown width {width!r}; allowed: 0..{len(self.descriptions) - 1} or {self.names}")
        object.__setattr__(self, "_index", index)
        return index

    # -- building ------------------------------------------------------------------------------------------------
    @classmethod
    def from_dense(cls, nets: Sequence[nn.Module], names: Sequence[str] | None = None) -> SlimmableNet:
        """From dense networks extracted from one supernet (smallest first), each with its calibrated BN."""
        slim = cls([n.description for n in nets], names)
        largest = nets[-1].state_dict()
        body_keys = set(slim.body.state_dict())
        with torch.no_grad():
            for key in body_keys:
                if not _is_stat(key):
                    slim.body.state_dict()[key].copy_(largest[key])
            for i, net in enumerate(nets):
                state = net.state_dict()
                for key, value in state.items():
                    if _is_stat(key):
                        continue
                    big = largest[key]
                    if not torch.equal(big[tuple(slice(0, s) for s in value.shape)], value):
                        raise OFAError(f"width {i} ({slim.names[i]}): tensor {key!r} is not a prefix of the "
                                       "largest width's; the widths must be extracted from one supernet")
                for name, _ in slim._bns:
                    if f"{name}.running_mean" not in state:
                        continue  # a block this width does not run
                    mean, var = state[f"{name}.running_mean"], state[f"{name}.running_var"]
                    key = name.replace(".", "__")
                    getattr(slim, f"mean__{key}")[i, :mean.numel()] = mean
                    getattr(slim, f"var__{key}")[i, :var.numel()] = var
        return slim.eval()

    @classmethod
    def from_supernet(cls, net: nn.Module, archs: Sequence, calib: Callable[[Any], Iterable] | None = None,
                      names: Sequence[str] | None = None, num_batches: int | None = None) -> SlimmableNet:
        """Extract ``archs`` (smallest first, nested) from ``net``, each calibrated on ``calib(arch)`` batches."""
        dense = [net.extract(a, calib_batches=None if calib is None else calib(net.space.validate(a)),
                             num_batches=num_batches) for a in archs]
        return cls.from_dense(dense, names)

    def extract(self, width: int | str) -> nn.Module:
        """The dense network of one width (with its own BN statistics), e.g. to export it."""
        i = self._index if width is None else (self._index_of.get(width) if isinstance(width, str) else width)
        if i is None or not 0 <= i < self.num_widths:
            raise OFAError(f"unknown width {width!r}; allowed: 0..{self.num_widths - 1} or {self.names}")
        dense = static_class("resnet")(self.descriptions[i])
        source = self.body.state_dict()
        bn_index = {name: name.replace(".", "__") for name, _ in self._bns}
        with torch.no_grad():
            for key, target in dense.state_dict().items():
                module, leaf = key.rsplit(".", 1)
                if leaf in ("running_mean", "running_var"):
                    table = getattr(self, f"{'mean' if leaf == 'running_mean' else 'var'}__{bn_index[module]}")
                    target.copy_(table[i, :target.numel()])
                elif leaf != "num_batches_tracked":
                    target.copy_(source[key][tuple(slice(0, s) for s in target.shape)])
        return dense.eval()

    # -- the forward pass over prepared views --------------------------------------------------------------------
    def _apply(self, fn, *args, **kwargs):
        self._plans = None  # views point at the old tensors after .to()/.half(); prepare them again
        return super()._apply(fn, *args, **kwargs)

    def _conv(self, conv: nn.Conv2d, cout: int, cin: int) -> tuple:
        return conv.weight[:cout, :cin], conv.stride, conv.padding

    def _bn(self, name: str, c: int, i: int) -> tuple:
        bn, key = self.body.get_submodule(name), name.replace(".", "__")
        return (getattr(self, f"mean__{key}")[i, :c], getattr(self, f"var__{key}")[i, :c], bn.weight[:c],
                bn.bias[:c], bn.eps)

    def _prepare(self) -> list:
        """For every width, the weight views and BN statistics it runs on (views: nothing is copied)."""
        plans = []
        body = self.body
        for i, d in enumerate(self.descriptions):
            spec = d["spec"]
            stem = (self._conv(body.conv1, spec["stem"], spec["in_chans"]), self._bn("bn1", spec["stem"], i))
            blocks = []
            for s, stage in enumerate(spec["stages"]):
                layer = getattr(body, f"layer{s + 1}")
                for b, (c_in, mid, out, _stride, downsample) in enumerate(stage):
                    block, p = layer[b], f"layer{s + 1}.{b}"
                    if spec["block"] == "bottleneck":
                        convs = [(self._conv(block.conv1, mid, c_in), self._bn(f"{p}.bn1", mid, i)),
                                 (self._conv(block.conv2, mid, mid), self._bn(f"{p}.bn2", mid, i)),
                                 (self._conv(block.conv3, out, mid), self._bn(f"{p}.bn3", out, i))]
                    else:
                        convs = [(self._conv(block.conv1, mid, c_in), self._bn(f"{p}.bn1", mid, i)),
                                 (self._conv(block.conv2, out, mid), self._bn(f"{p}.bn2", out, i))]
                    shortcut = (self._conv(block.downsample[0], out, c_in), self._bn(f"{p}.downsample.1", out, i)) \
                        if downsample else None
                    blocks.append((convs, shortcut))
            last = spec["stages"][-1][-1][2]
            plans.append((spec["resolution"], spec["stem_type"] == "conv7_pool", stem, blocks,
                          (body.fc.weight[:, :last], body.fc.bias)))
        return plans

    @staticmethod
    def _conv_bn(x: torch.Tensor, conv: tuple, bn: tuple) -> torch.Tensor:
        weight, stride, padding = conv
        mean, var, w, b, eps = bn
        return F.batch_norm(F.conv2d(x, weight, None, stride, padding), mean, var, w, b, False, 0.0, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._plans is None:
            self._plans = self._prepare()
        resolution, pool, stem, blocks, (fc_w, fc_b) = self._plans[self._index]
        if x.dim() != 4 or x.shape[-1] != resolution or x.shape[-2] != resolution:
            raise OFAError(f"width {self._index} ({self.names[self._index]}) runs at {resolution}x{resolution}, "
                           f"got an input of shape {tuple(x.shape)}")
        x = F.relu(self._conv_bn(x, *stem))
        if pool:
            x = F.max_pool2d(x, 3, 2, 1)
        for convs, shortcut in blocks:
            identity = x if shortcut is None else self._conv_bn(x, *shortcut)
            for conv, bn in convs[:-1]:
                x = F.relu(self._conv_bn(x, conv, bn))
            x = F.relu(self._conv_bn(x, *convs[-1]) + identity)
        return F.linear(F.adaptive_avg_pool2d(x, 1).flatten(1), fc_w, fc_b)

    # -- latency -------------------------------------------------------------------------------------------------
    def measure_widths(self, batch: int = 1, repeats: int = 20, warmup: int = 3,
                       threads: int | None = None) -> list[float]:
        """Measure every width's median latency (ms) on this machine; kept for the controller and saved."""
        from .measure import measure_latency

        current, out = self._index, []
        try:
            for i in range(self.num_widths):
                self.set_width(i)
                shape = (self.descriptions[i]["spec"]["in_chans"], self.resolution, self.resolution)
                out.append(measure_latency(self, shape, batch, repeats, warmup, threads)["median_ms"])
        finally:
            self.set_width(current)
        self.latency_ms = out
        return out

    # -- files ---------------------------------------------------------------------------------------------------
    def description(self) -> dict[str, Any]:
        return {"format": FORMAT, "kind": "slimmable", "names": self.names, "latency_ms": self.latency_ms,
                "widths": self.descriptions}

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``PATH.safetensors`` (largest weights once + per-width BN statistics) and ``PATH.json``."""
        weights_path, json_path = _paths(path)
        description = self.description()
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()
                   if not (k.startswith("body.") and _is_stat(k))}
        metadata = {"format": FORMAT, "description_sha256": _digest(description)}
        atomic_write(weights_path, lambda tmp: safetensors.torch.save_file(tensors, tmp, metadata=metadata))
        atomic_write(json_path, lambda tmp: Path(tmp).write_text(json.dumps(description, indent=2)))
        return weights_path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SlimmableNet:
        weights_path, json_path = _paths(path)
        for p in (weights_path, json_path):
            if not p.is_file():
                raise WeightsError(f"no slimmable network file {p}")
        description = read_json(json_path, WeightsError)
        if not isinstance(description, dict) or description.get("format") != FORMAT:
            raise WeightsError(f"{json_path} is not a slimmable network description (format {FORMAT!r})")
        try:
            with safetensors.safe_open(str(weights_path), framework="pt") as f:
                metadata = f.metadata() or {}
            tensors = safetensors.torch.load_file(str(weights_path))
        except Exception as e:  # safetensors raises several types for truncated or foreign files
            raise WeightsError(f"{weights_path} is not a readable safetensors file ({type(e).__name__}: {e}); "
                               "it may be truncated or corrupt") from None
        if metadata.get("description_sha256") != _digest(description):
            raise WeightsError(f"{weights_path} and {json_path} do not belong together")
        slim = cls(description["widths"], description["names"], description.get("latency_ms"))
        expected = {k: v for k, v in slim.state_dict().items() if not (k.startswith("body.") and _is_stat(k))}
        if set(expected) != set(tensors) or any(tensors[k].shape != v.shape for k, v in expected.items()):
            raise WeightsError(f"{weights_path} does not match its description (tensor names or shapes differ)")
        slim.load_state_dict(tensors, strict=False)
        return slim.eval()


class LatencyController:
    """Per call, run the widest width whose measured latency is within ``target_ms``.

    ``controller(x, target_ms)`` picks the width, resizes ``x`` to that width's resolution if needed and runs it;
    when no width meets the target the smallest one runs. ``controller.last`` is the width used.
    """

    def __init__(self, net: SlimmableNet, latency_ms: Sequence[float] | None = None) -> None:
        latency = list(latency_ms) if latency_ms is not None else net.latency_ms
        if latency is None:
            latency = net.measure_widths()
        if len(latency) != net.num_widths:
            raise OFAError(f"need one latency per width ({net.num_widths}), got {len(latency)}")
        self.net, self.latency_ms, self.last = net, latency, net.width

    def pick(self, target_ms: float) -> int:
        fitting = [i for i, ms in enumerate(self.latency_ms) if ms <= target_ms]
        return max(fitting, key=lambda i: (self.net.descriptions[i]["macs"], i)) if fitting else 0

    def __call__(self, x: torch.Tensor, target_ms: float) -> torch.Tensor:
        self.last = self.net.set_width(self.pick(target_ms))
        r = self.net.resolution
        if x.shape[-1] != r or x.shape[-2] != r:
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        return self.net(x)


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    if path.is_dir():
        path = path / "slimmable"
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _digest(description: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
