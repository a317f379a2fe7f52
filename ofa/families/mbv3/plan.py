"""The MobileNetV3 / EfficientNet family's architecture definition, without tensors.

A network of this family is a stem convolution, a first depthwise-separable block, stages of inverted-residual
(MBConv) blocks, and a head. :class:`MBConvPlan` turns constructor arguments into the search space, the channel
counts of any arch, the static (dense) description of that arch, and its analytic MACs and parameters.

Definitions (documented in README):
- The search space's stages are the MBConv stages. ``widths[s]`` multiplies stage ``s``'s output channels (its
  residual stream; every stage starts with a block that changes stride or channels, so stages are independent).
- ``expands[s][b]`` scales a block's maximum middle channels by ``expand / max(expand choices)``. In ``ofa_mbv3``
  every block's maximum is 6x its maximum input, so the gene reads as the usual expand ratio {3, 4, 6}; a supernet
  derived from a timm model keeps the model's own (possibly irregular) middle widths as the maximum.
- ``kernels[s][b]`` is the depthwise kernel size of a block (see :mod:`ofa.kernel`).
- ``stem`` multiplies the stem's and the first block's output channels (absent when it has only the choice 1.0).
- Squeeze-excite width follows the family's rule applied to the active channels: MobileNetV3 reduces the middle
  channels by 4 rounded to the divisor, EfficientNet reduces the block *input* by 4 (rounded to an integer);
  never more than the largest arch's.
- Channel counts are rounded to a multiple of ``divisor`` and never exceed the maximum; choices that round to the
  same counts are one choice (the largest multiplier is kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import OFAError
from ...layers import make_divisible
from ...space import Arch, SearchSpace, dedupe_choices

ACTIVATIONS = ("relu", "hswish", "silu")
# What differs between the two styles: the squeeze-excite rule, its activation and gate, and the head.
STYLES: dict[str, dict[str, Any]] = {
    # MobileNetV3: SE on the middle channels, ReLU inside, hard-sigmoid gate; the head is a 1x1 conv + BN + act
    # ("final expand") before pooling and a 1x1 conv with bias + act after it.
    "mobilenetv3": dict(se_ref="mid", se_act="relu", se_gate="hard_sigmoid"),
    # EfficientNet: SE width from the block input, the block's activation inside, sigmoid gate; the head is a
    # 1x1 conv + BN + act before pooling.
    "efficientnet": dict(se_ref="in", se_act=None, se_gate="sigmoid"),
}


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


@dataclass(frozen=True)
class Block:
    """The channel counts of one active block (``mid == in_c`` for the depthwise-separable first block)."""

    in_c: int
    mid: int
    out: int
    kernel: int
    stride: int
    se: int  # squeeze-excite reduced channels, 0 without SE
    act: str
    skip: bool

    def to_list(self) -> list:
        return [self.in_c, self.mid, self.out, self.kernel, self.stride, self.se, self.act, self.skip]


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise OFAError(f"{name} must be a positive integer, got {value!r}")
    return value


def _act(name: str, value: Any) -> str:
    if value not in ACTIVATIONS:
        raise OFAError(f"{name}={value!r} is not a known activation; allowed: {list(ACTIVATIONS)}")
    return value


class MBConvPlan:
    """Search space, channel counts, static spec and costs of a MobileNetV3/EfficientNet supernet's arguments."""

    def __init__(self, style: str, stem_channels: int, first_channels: int, stage_channels: Sequence[int],
                 depths: Sequence[Sequence[int]], strides: Sequence[int], kernel_sizes: Sequence,
                 expand_ratios: Sequence[float], acts: Sequence[str], se: Sequence[bool],
                 head_channels: int, num_features: int, resolutions: Sequence[int],
                 stem_act: str = "hswish", stem_stride: int = 2, first_kernel: int = 3, first_act: str = "relu",
                 first_se: bool = False, head_act: str = "hswish", mid_channels: Sequence[Sequence[int]] | None = None,
                 width_mults: Sequence[float] = (1.0,), stem_mults: Sequence[float] = (1.0,), in_chans: int = 3,
                 num_classes: int = 1000, divisor: int = 8) -> None:
        if style not in STYLES:
            raise OFAError(f"unknown MBConv style {style!r}; allowed: {list(STYLES)}")
        for name, value in (("stem_channels", stem_channels), ("first_channels", first_channels),
                            ("head_channels", head_channels), ("num_features", num_features),
                            ("in_chans", in_chans), ("num_classes", num_classes), ("divisor", divisor),
                            ("stem_stride", stem_stride), ("first_kernel", first_kernel)):
            _positive_int(name, value)
        n = len(stage_channels)
        if n == 0 or not (len(depths) == len(strides) == len(acts) == len(se) == n):
            raise OFAError(f"stage_channels, depths, strides, acts and se need one entry per stage; got {n}, "
                           f"{len(depths)}, {len(strides)}, {len(acts)} and {len(se)}")
        if not resolutions or any(not isinstance(r, int) or r < 8 for r in resolutions):
            raise OFAError(f"resolutions must be integers >= 8, got {list(resolutions)!r}")
        self.style = style
        self.rules = STYLES[style]
        self.in_chans, self.num_classes, self.divisor = in_chans, num_classes, divisor
        self.stem_channels, self.stem_stride, self.stem_act = stem_channels, stem_stride, _act("stem_act", stem_act)
        self.first_channels, self.first_kernel = first_channels, first_kernel
        self.first_act, self.first_se = _act("first_act", first_act), bool(first_se)
        self.first_skip = stem_channels == first_channels  # stride 1: a residual ties the stem to the first block
        self.stage_channels = tuple(_positive_int(f"stage_channels[{s}]", c) for s, c in enumerate(stage_channels))
        self.strides = tuple(_positive_int(f"strides[{s}]", st) for s, st in enumerate(strides))
        self.acts = tuple(_act(f"acts[{s}]", a) for s, a in enumerate(acts))
        self.se = tuple(bool(x) for x in se)
        self.head_channels, self.num_features, self.head_act = head_channels, num_features, _act("head_act", head_act)
        for s, ds in enumerate(depths):
            if not ds or any(not isinstance(d, int) or d < 1 for d in ds):
                raise OFAError(f"depths[{s}] must list block counts >= 1, got {list(ds)!r}")
        max_depths = [max(ds) for ds in depths]
        for s in range(n):
            if self.strides[s] == 1 and self.block_in_max(s, 0) == self.stage_channels[s]:
                raise OFAError(f"stage {s} starts with a block that keeps stride and channels; every stage must "
                               "start with a stride or channel change (its residual stream is its own)")
        kernels = kernel_sizes if kernel_sizes and isinstance(kernel_sizes[0], (list, tuple)) else [kernel_sizes] * n
        if len(kernels) != n:
            raise OFAError(f"kernel_sizes needs one list per stage ({n} stages) or one flat list, got {kernel_sizes!r}")
        for s, ks in enumerate(kernels):
            if not ks or any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in ks):
                raise OFAError(f"kernel_sizes[{s}] must list odd kernel sizes such as [3, 5, 7], got {list(ks)!r}")
        ratios = sorted(set(float(e) for e in expand_ratios))
        if not ratios or ratios[0] <= 0:
            raise OFAError(f"expand_ratios must be positive numbers, got {list(expand_ratios)!r}")
        self.max_expand = ratios[-1]
        if mid_channels is None:
            mid_channels = [[round(self.max_expand * self.block_in_max(s, b)) for b in range(max_depths[s])]
                            for s in range(n)]
        if len(mid_channels) != n or any(len(m) != max_depths[s] for s, m in enumerate(mid_channels)):
            raise OFAError("mid_channels needs one list per stage with one entry per block of the deepest arch")
        self.max_mids = tuple(tuple(_positive_int("mid_channels", m) for m in row) for row in mid_channels)
        width_mults = list(width_mults)
        self._mids: dict[tuple[int, int, float], int] = {}  # lookup tables: the search calls costs() a lot
        self._se: dict[tuple[int, int], int] = {}
        stem_choices = dedupe_choices(stem_mults, lambda m: (self.channels(m, stem_channels),
                                                             self.channels(m, first_channels)))
        self.space = SearchSpace(
            resolutions=tuple(sorted(set(int(r) for r in resolutions))),
            depths=tuple(tuple(sorted(set(ds))) for ds in depths),
            widths=tuple(dedupe_choices(width_mults, lambda m, c=c: self.channels(m, c))
                         for c in self.stage_channels),
            expands=tuple(dedupe_choices(ratios, lambda e, s=s: tuple(self.mid(s, b, e)
                                                                      for b in range(max_depths[s])))
                          for s in range(n)),
            stem=None if stem_choices == (1.0,) else stem_choices,
            kernels=tuple(tuple(sorted(set(ks))) for ks in kernels),
        )

    # -- channel counts --------------------------------------------------------------------------------------
    def channels(self, mult: float, maximum: int) -> int:
        return maximum if mult >= 1.0 else min(maximum, make_divisible(mult * maximum, self.divisor))

    def block_in_max(self, s: int, b: int) -> int:
        if b > 0:
            return self.stage_channels[s]
        return self.first_channels if s == 0 else self.stage_channels[s - 1]

    def mid(self, s: int, b: int, expand: float) -> int:
        key = (s, b, expand)
        if key not in self._mids:
            top = self.max_mids[s][b]
            # the largest arch is exactly the network it was defined as (e.g. a timm model)
            self._mids[key] = top if expand >= self.max_expand else \
                min(top, make_divisible(expand / self.max_expand * top, self.divisor))
        return self._mids[key]

    def se_channels(self, ref: int, ref_max: int) -> int:
        """Squeeze-excite reduced channels for ``ref`` active channels (the middle or the input, by style)."""
        key = (ref, ref_max)
        if key not in self._se:
            if self.style == "mobilenetv3":
                full, active = make_divisible(ref_max * 0.25, 8), make_divisible(ref * 0.25, 8)
            else:
                full, active = max(1, round(ref_max * 0.25)), max(1, round(ref * 0.25))
            self._se[key] = min(full, active)
        return self._se[key]

    def stem_width(self, arch: Arch) -> int:
        return self.channels(arch.stem if arch.stem is not None else 1.0, self.stem_channels)

    def first_block(self, arch: Arch) -> Block:
        stem = self.stem_width(arch)
        out = self.channels(arch.stem if arch.stem is not None else 1.0, self.first_channels)
        se = self.se_channels(stem, self.stem_channels) if self.first_se else 0
        return Block(stem, stem, out, self.first_kernel, 1, se, self.first_act, self.first_skip)

    def blocks(self, arch: Arch) -> list[list[Block]]:
        """The channel counts of every active MBConv block of ``arch``."""
        stages, c_in = [], self.first_block(arch).out
        for s, depth in enumerate(arch.depths):
            out = self.channels(arch.widths[s], self.stage_channels[s])
            stage = []
            for b in range(depth):
                mid = self.mid(s, b, arch.expands[s][b])
                se = 0
                if self.se[s]:
                    se = self.se_channels(mid, self.max_mids[s][b]) if self.rules["se_ref"] == "mid" \
                        else self.se_channels(c_in, self.block_in_max(s, b))
                stage.append(Block(c_in, mid, out, arch.kernels[s][b], self.strides[s] if b == 0 else 1, se,
                                   self.acts[s], b > 0))
                c_in = out
            stages.append(stage)
        return stages

    # -- static description and costs ------------------------------------------------------------------------
    def static_spec(self, arch: Arch) -> dict[str, Any]:
        """JSON description of the dense network of ``arch`` (what :class:`StaticMBConvNet` builds)."""
        rules = self.rules
        return {
            "family": "mbv3", "style": self.style, "in_chans": self.in_chans, "num_classes": self.num_classes,
            "resolution": arch.resolution,
            "stem": [self.stem_width(arch), self.stem_stride, self.stem_act],
            "first": self.first_block(arch).to_list(),
            "stages": [[b.to_list() for b in stage] for stage in self.blocks(arch)],
            "head": [self.head_channels, self.num_features, self.head_act],
            "se_act": rules["se_act"], "se_gate": rules["se_gate"],
        }

    def costs(self, arch: Arch) -> tuple[int, int]:
        return spec_costs(self.static_spec(arch))


def spec_costs(spec: dict[str, Any]) -> tuple[int, int]:
    """(MACs, parameters) of a static MBConv spec at batch 1.

    MACs count every convolution (squeeze-excite's two 1x1 convolutions included, on the pooled 1x1 map) and the
    classifier: what ``torch.utils.flop_counter`` counts, halved. BatchNorm, activations, pooling, additions and the
    squeeze-excite gating product are not counted, as for the ResNet family. Parameters are every weight and bias.
    """
    size = spec["resolution"]
    stem, stem_stride, _ = spec["stem"]
    size = _conv_out(size, 3, stem_stride)
    macs = size * size * 9 * spec["in_chans"] * stem
    params = 9 * spec["in_chans"] * stem + 2 * stem

    def se_costs(channels: int, rd: int) -> tuple[int, int]:
        return 2 * channels * rd, 2 * channels * rd + rd + channels

    c_in, _, out, k, _, rd, _, _ = spec["first"]
    macs += size * size * (k * k * c_in + c_in * out)
    params += k * k * c_in + c_in * out + 2 * (c_in + out)
    if rd:
        m, p = se_costs(c_in, rd)
        macs, params = macs + m, params + p
    for stage in spec["stages"]:
        for c_in, mid, out, k, stride, rd, _, _ in stage:
            out_size = _conv_out(size, k, stride)
            macs += size * size * c_in * mid + out_size * out_size * (k * k * mid + mid * out)
            params += c_in * mid + k * k * mid + mid * out + 2 * (2 * mid + out)
            if rd:
                m, p = se_costs(mid, rd)
                macs, params = macs + m, params + p
            size = out_size
    head, features, _ = spec["head"]
    last = spec["stages"][-1][-1][2]
    macs += size * size * last * head + head * features + features * spec["num_classes"] \
        if spec["style"] == "mobilenetv3" else size * size * last * head + head * spec["num_classes"]
    if spec["style"] == "mobilenetv3":
        # final expand (conv + BN) before pooling; conv_head (with bias) after it; then the classifier
        params += last * head + 2 * head + head * features + features
        params += features * spec["num_classes"] + spec["num_classes"]
    else:
        # conv_head + BN before pooling; then the classifier on head channels
        params += last * head + 2 * head + head * spec["num_classes"] + spec["num_classes"]
    return macs, params
