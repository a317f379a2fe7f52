"""A runtime-slimmable network: one set of weights, several nested widths, switched in constant time.

Given nested dense subnets (each contained in the next: a prefix of its channels and blocks), the network stores
the largest one's weights once, plus every width's own BatchNorm statistics (a subnet's statistics are not a
slice of a larger one's, so each width carries its calibrated ones). Its body is the family's own dense network
built from width-switching layers (:mod:`deploy.slim_layers`), so any family's chain works.

Two modes (``mode=``, also ``load(path, mode=...)``): ``"fast"`` (the default) gives, at the first forward, widths
their weights in the deployed form (BatchNorm folded, contiguous, channels-last), so each such width runs at its
dense deployed network's speed, as many widths as fit within ``memory_limit`` (in units of the largest dense
network's bytes, default 2; :mod:`deploy.slim_fast`); the others run on views (``derived_widths``,
``memory_bytes()``). ``"lean"`` runs every width on views of the stored weights: no extra memory, slower. The file
stores the largest weights once either way. ``set_width(i | name)`` only changes an index, so a switch copies and allocates
nothing. At every width the outputs equal the corresponding extracted dense network's.

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
from ofa.static import conv_bn_pairs

from . import slim_fast
from .slim_layers import SLIM_LAYERS, SlimLayers, WidthSwitch

FORMAT = "ofa-slimmable/2"
MODES = ("fast", "lean")
MEMORY_LIMIT = 2.0  # fast mode's default budget, in units of the largest dense network's bytes
# Tensors stored once per width (a width's BN statistics, a transformer width's position embedding), not as one
# largest tensor whose prefixes every width runs on.
_STATS = ("running_mean", "running_var", "num_batches_tracked", "pos_embed")


def _is_stat(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in _STATS


def _dense_on_meta(description: Mapping[str, Any]) -> nn.Module:
    """The dense network of a description, without allocating or initialising weights (for its shapes)."""
    with torch.device("meta"):
        return static_class(description["spec"]["family"])(dict(description))


def check_nested(descriptions: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None) -> list[nn.Module]:
    """Raise OFAError unless each dense network is contained in the next (smallest first): every layer it has,
    the next has, with at least as many channels (a prefix) and the same kernel size. Works for every family.
    Returns the dense networks, built on the meta device (shapes only)."""
    names = list(names) if names is not None else [f"width{i}" for i in range(len(descriptions))]
    nets = [_dense_on_meta(d) for d in descriptions]
    for i in range(len(nets) - 1):
        small, large, where = descriptions[i]["spec"], descriptions[i + 1]["spec"], f"{names[i]} -> {names[i + 1]}"
        for field in ("family", "in_chans", "num_classes"):
            if small.get(field) != large.get(field):
                raise OFAError(f"{where}: {field} differs ({small.get(field)!r} vs {large.get(field)!r}); "
                               "slimmable widths must come from one supernet")
        big = nets[i + 1].state_dict()
        for key, tensor in nets[i].state_dict().items():
            if _is_stat(key):
                continue  # per width, whatever its shape
            layer = key.rsplit(".", 1)[0]
            if key not in big:
                raise OFAError(f"{where}: layer {layer} is not in the next width's network (more blocks than it); "
                               "widths must be ordered smallest first, each contained in the next")
            a, b = tuple(tensor.shape), tuple(big[key].shape)
            channels = 2 if len(a) == 4 else len(a)  # a convolution's kernel must be equal; other dims nest
            if len(a) != len(b) or any(x > y for x, y in zip(a[:channels], b[:channels])) or \
                    a[channels:] != b[channels:]:
                raise OFAError(f"{where}: {key} has shape {list(a)}, not contained in the next width's {list(b)}; "
                               "widths, expands and depths must be prefixes of the next width's, kernels equal")
    return nets


class SlimmableNet(nn.Module):
    """Nested dense networks of one family sharing one set of weights; ``set_width(i | name)`` switches."""

    def __init__(self, descriptions: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None,
                 latency_ms: Sequence[float] | None = None, mode: str = "fast",
                 memory_limit: float | None = MEMORY_LIMIT) -> None:
        super().__init__()
        if not descriptions:
            raise OFAError("a SlimmableNet needs at least one width")
        if mode not in MODES:
            raise OFAError(f"unknown SlimmableNet mode {mode!r}; allowed: {list(MODES)}")
        ok = isinstance(memory_limit, (int, float)) and not isinstance(memory_limit, bool) and memory_limit >= 1
        if memory_limit is not None and not (ok and memory_limit != float("inf")):
            raise OFAError(f"memory_limit must be None (no limit) or a number >= 1 (times the largest dense "
                           f"network's memory), got {memory_limit!r}")
        self.mode, self.memory_limit, self._derived = mode, memory_limit, False
        self._inference_only: str | None = None  # why the stored weights were folded or dropped, once they are
        self.descriptions = [copy.deepcopy(dict(d)) for d in descriptions]
        self.names = list(names) if names is not None else [f"width{i}" for i in range(len(descriptions))]
        if len(self.names) != len(self.descriptions) or len(set(self.names)) != len(self.names):
            raise OFAError(f"give one distinct name per width ({len(self.descriptions)} widths), got {self.names}")
        meta_nets = check_nested(self.descriptions, self.names)
        largest = meta_nets[-1].state_dict().values()  # its bytes: floating elements (at our dtype) and the rest
        self._largest_dense = (sum(t.numel() for t in largest if t.is_floating_point()),
                               sum(t.numel() * t.element_size() for t in largest if not t.is_floating_point()))
        self._index_of = {name: i for i, name in enumerate(self.names)}
        self.latency_ms = list(latency_ms) if latency_ms is not None else None
        # The largest width's network, built from width-switching layers, holds every weight once; each layer
        # learns from every width's dense network the shape it runs at there.
        n = len(self.descriptions)
        self.switch = WidthSwitch()
        self.body = static_class(self.descriptions[-1]["spec"]["family"])(
            self.descriptions[-1], layers=SlimLayers(self.switch, n))
        slim_layers = {name: m for name, m in self.body.named_modules() if isinstance(m, SLIM_LAYERS)}
        self._depths = []
        for i, dense in enumerate(meta_nets):
            self._depths.append(dense.stage_depths())
            for name, module in dense.named_modules():
                if name in slim_layers:
                    slim_layers[name].set_shape(i, module)
        self.set_width(n - 1)

    # -- widths --------------------------------------------------------------------------------------------------
    @property
    def num_widths(self) -> int:
        return len(self.descriptions)

    @property
    def width(self) -> int:
        return self.switch.index

    @property
    def resolution(self) -> int:
        return self.descriptions[self.switch.index]["spec"]["resolution"]

    def _resolve(self, width: int | str) -> int:
        index = self._index_of.get(width) if isinstance(width, str) else width
        if index is None or not isinstance(index, int) or not 0 <= index < len(self.descriptions):
            raise OFAError(f"unknown width {width!r}; allowed: 0..{len(self.descriptions) - 1} or {self.names}")
        return index

    def set_width(self, width: int | str) -> int:
        """Run as width ``width`` (an index, smallest first, or a name) from now on: constant time, no copies."""
        self.switch.index = self._resolve(width)
        return self.switch.index

    # -- modes -----------------------------------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        """``"fast"`` (per-width deployed-form weights, derived at the next forward) or ``"lean"`` (views)."""
        self._check_stored("change its mode")
        if mode not in MODES:
            raise OFAError(f"unknown SlimmableNet mode {mode!r}; allowed: {list(MODES)}")
        self.mode = mode
        self._stale()

    def _stale(self) -> None:
        """The stored weights changed (or moved): derived tensors are made again when next needed."""
        slim_fast.reset(self.body)
        self._derived = False

    def _apply(self, fn, *args, **kwargs):
        self._check_stored("move or convert it")
        self._stale()
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._check_stored("load weights into it")
        self._stale()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def prepare(self) -> None:
        """Fast mode: give widths their deployed-form weights now, within ``memory_limit`` (else the first
        forward does). When the stored weights plus every width's copy do not fit, the stored weights become the
        largest width's deployed form and the network runs inference only (see ``drop_stored``)."""
        if self.mode != "fast" or self._derived:
            return
        limit = None if self.memory_limit is None else self.memory_limit * self.memory_bytes()["largest_dense"]
        if slim_fast.prepare(self, self.body, conv_bn_pairs(self.body), self.num_widths, limit,
                             folded=self._inference_only is not None):
            self._inference_only = self._inference_only or f"memory_limit={self.memory_limit}"
        self._derived = True

    def drop_stored(self) -> None:
        """Inference only, in less memory, every width derived whatever ``memory_limit``: the stored weights
        become the largest width's deployed form, the other widths get their own copies. Saving, extracting,
        changing mode or moving the network then raise: load the file again for those."""
        if self.mode != "fast":
            raise OFAError("drop_stored() needs fast mode (lean mode runs on the stored weights)")
        slim_fast.prepare(self, self.body, conv_bn_pairs(self.body), self.num_widths, None, fold=True,
                          folded=self._inference_only is not None)
        self._inference_only, self._derived = "drop_stored()", True

    def _check_stored(self, action: str) -> None:
        if getattr(self, "_inference_only", None):
            raise OFAError(f"this SlimmableNet folded its stored weights into the largest width's deployed form "
                           f"({self._inference_only}) and runs inference only; load it again (with "
                           f"memory_limit=None to keep them) to {action}")

    @property
    def derived_widths(self) -> list[int]:
        """The widths that run at their dense deployed network's speed (their own deployed-form weights); the
        others run on views. Empty in lean mode; decided by ``prepare()`` (or the first forward)."""
        self.prepare()
        return [i for i in range(self.num_widths) if slim_fast.derived(self.body, i)]

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held: ``stored`` (the state dict: largest weights once, per-width BN statistics, or once folded
        the largest width's deployed form), ``derived`` (the per-width copies), their ``total``, and
        ``largest_dense``, the largest width's dense network's, which ``memory_limit`` is in units of."""
        stored, derived = slim_fast.held_bytes(self)
        floating = next((p for p in self.parameters() if p.is_floating_point()), None)
        size = 4 if floating is None else floating.element_size()
        return {"stored": stored, "derived": derived, "total": stored + derived,
                "largest_dense": self._largest_dense[0] * size + self._largest_dense[1]}

    # -- building ------------------------------------------------------------------------------------------------
    @classmethod
    def from_dense(cls, nets: Sequence[nn.Module], names: Sequence[str] | None = None,
                   mode: str = "fast", memory_limit: float | None = MEMORY_LIMIT) -> SlimmableNet:
        """From dense networks extracted from one supernet (smallest first), each with its calibrated BN."""
        slim = cls([n.description for n in nets], names, mode=mode, memory_limit=memory_limit)
        largest = nets[-1].state_dict()
        with torch.no_grad():
            for key, target in slim.body.state_dict().items():
                if not _is_stat(key):
                    target.copy_(largest[key])
            for i, net in enumerate(nets):
                state = net.state_dict()
                for key, value in state.items():
                    if _is_stat(key):
                        continue
                    if not torch.equal(largest[key][tuple(slice(0, s) for s in value.shape)], value):
                        raise OFAError(f"width {i} ({slim.names[i]}): tensor {key!r} is not a prefix of the "
                                       "largest width's; the widths must be extracted from one supernet")
            body = dict(slim.body.named_modules())
            for i, net in enumerate(nets):
                for name, module in net.named_modules():
                    if hasattr(body.get(name), "load_width"):
                        body[name].load_width(i, module)
        slim._stale()  # weights were written in place
        return slim.eval()

    @classmethod
    def from_supernet(cls, net: nn.Module, archs: Sequence, calib: Callable[[Any], Iterable] | None = None,
                      names: Sequence[str] | None = None, num_batches: int | None = None,
                      mode: str = "fast", memory_limit: float | None = MEMORY_LIMIT) -> SlimmableNet:
        """Extract ``archs`` (smallest first, nested) from ``net``, each calibrated on ``calib(arch)`` batches."""
        dense = [net.extract(a, calib_batches=None if calib is None else calib(net.space.validate(a)),
                             num_batches=num_batches) for a in archs]
        return cls.from_dense(dense, names, mode, memory_limit)

    def extract(self, width: int | str) -> nn.Module:
        """The dense network of one width (with its own BN statistics), e.g. to export it."""
        self._check_stored("extract a width")
        i = self._resolve(width)
        dense = static_class(self.descriptions[i]["spec"]["family"])(self.descriptions[i])
        source = dict(self.body.named_modules())
        with torch.no_grad():
            for name, module in dense.named_modules():
                for leaf, target in list(module.named_parameters(recurse=False)) + \
                        list(module.named_buffers(recurse=False)):
                    if leaf == "num_batches_tracked":
                        continue
                    value = getattr(source[name], leaf)
                    if leaf in _STATS:  # this width's row (a position embedding keeps its leading 1)
                        value = value[i] if value.dim() > target.dim() else value[i:i + 1]
                    target.copy_(value[tuple(slice(0, s) for s in target.shape)])
        return dense.eval()

    # -- the forward pass ------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._derived:
            self.prepare()
        i = self.switch.index
        resolution = self.descriptions[i]["spec"]["resolution"]
        if x.dim() != 4 or x.shape[-1] != resolution or x.shape[-2] != resolution:
            raise OFAError(f"width {i} ({self.names[i]}) runs at {resolution}x{resolution}, "
                           f"got an input of shape {tuple(x.shape)}")
        return self.body.run(x, self._depths[i])

    # -- latency -------------------------------------------------------------------------------------------------
    def measure_widths(self, batch: int = 1, repeats: int = 20, warmup: int = 3,
                       threads: int | None = None) -> list[float]:
        """Measure every width's median latency (ms) on this machine; kept for the controller and saved."""
        from ofa.timing import measure_latency

        current, out = self.switch.index, []
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
        self._check_stored("save it")
        weights_path, json_path = _paths(path)
        description = self.description()
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()
                   if not k.endswith("num_batches_tracked")}
        metadata = {"format": FORMAT, "description_sha256": _digest(description)}
        atomic_write(weights_path, lambda tmp: safetensors.torch.save_file(tensors, tmp, metadata=metadata))
        atomic_write(json_path, lambda tmp: Path(tmp).write_text(json.dumps(description, indent=2)))
        return weights_path

    @classmethod
    def load(cls, path: str | os.PathLike, mode: str = "fast",
             memory_limit: float | None = MEMORY_LIMIT) -> SlimmableNet:
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
        slim = cls(description["widths"], description["names"], description.get("latency_ms"), mode, memory_limit)
        expected = {k: v for k, v in slim.state_dict().items() if not k.endswith("num_batches_tracked")}
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


def state_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (its state dict)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    if path.is_dir():
        path = path / "slimmable"
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _digest(description: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
