"""The ResNet family's architecture definition, without tensors.

A :class:`ResNetPlan` turns constructor arguments into the search space, the channel counts of any arch, the
static (dense) network description of that arch, and its analytic MACs and parameters. Nothing here allocates
weights, so ``ofa info`` and the search's cost model stay fast.

Definitions (documented in README):
- ``widths[s]`` multiplies stage ``s``'s maximum output channels (its residual stream; every block of the stage
  and its shortcut projection share it).
- ``expands[s][b]`` is a block's middle channels divided by its stage's *maximum* output channels (as in the
  once-for-all ResNets: a plain ResNet-50 bottleneck has 0.25, a basic block 1.0). The middle width therefore
  does not move with the stage's width multiplier.
- ``stem`` multiplies the stem's channels. When stage 0 has no shortcut projection (a basic-block ResNet whose
  stem is as wide as stage 0), the stem is tied to stage 0: there is no ``stem`` gene, and stage 0's width takes
  the stem's choices (the stem is pruned least).
- Every channel count is rounded to a multiple of ``divisor`` (8 by default) and never exceeds the maximum;
  choices that round to the same count are one choice (the largest multiplier is kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from ...errors import OFAError
from ...layers import make_divisible
from ...space import Arch, SearchSpace

STEM_TYPES = ("conv7_pool", "conv3")
BLOCKS = ("basic", "bottleneck")


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class StaticBlock(NamedTuple):  # a tuple: the search's cost model builds ~16 per candidate
    in_c: int
    mid: int
    out: int
    stride: int
    downsample: bool


class ResNetPlan:
    """Search space, channel counts, static spec and costs of a ResNet supernet's arguments."""

    def __init__(self, block: str, stage_channels: Sequence[int], depths: Sequence[Sequence[int]],
                 strides: Sequence[int], stem_channels: int, stem_type: str, expand_ratios: Sequence[float],
                 width_mults: Sequence[float], stem_mults: Sequence[float], resolutions: Sequence[int],
                 in_chans: int = 3, num_classes: int = 1000, divisor: int = 8) -> None:
        if block not in BLOCKS:
            raise OFAError(f"unknown ResNet block {block!r}; allowed: {list(BLOCKS)}")
        if stem_type not in STEM_TYPES:
            raise OFAError(f"unknown ResNet stem_type {stem_type!r}; allowed: {list(STEM_TYPES)}")
        for name, value in (("in_chans", in_chans), ("num_classes", num_classes), ("divisor", divisor),
                            ("stem_channels", stem_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise OFAError(f"{name} must be a positive integer, got {value!r}")
        n = len(stage_channels)
        if not (len(depths) == len(strides) == n) or n == 0:
            raise OFAError(f"stage_channels, depths and strides need one entry per stage; got {n}, "
                           f"{len(depths)} and {len(strides)}")
        if not resolutions or any(not isinstance(r, int) or r < 8 for r in resolutions):
            raise OFAError(f"resolutions must be integers >= 8, got {list(resolutions)!r}")
        self.block = block
        self.stage_channels = tuple(int(c) for c in stage_channels)
        self.strides = tuple(int(s) for s in strides)
        self.stem_channels = int(stem_channels)
        self.stem_type = stem_type
        self.in_chans, self.num_classes, self.divisor = in_chans, num_classes, divisor
        # The shortcut of a stage's first block is a projection unless shape and width already match.
        self.projections = tuple(
            self.strides[s] != 1 or (self.stem_channels if s == 0 else self.stage_channels[s - 1])
            != self.stage_channels[s] for s in range(n))
        self.stem_tied = not self.projections[0]
        ratios = sorted(set(float(e) for e in expand_ratios))
        self.max_expand = ratios[-1]
        self._mids: dict[tuple[int, float], int] = {}
        width_choices = tuple(self._dedupe(width_mults, c) for c in self.stage_channels)
        if self.stem_tied:
            width_choices = (self._dedupe(stem_mults, self.stage_channels[0]),) + width_choices[1:]
        for s, ds in enumerate(depths):
            if not ds or any(not isinstance(d, int) or d < 1 for d in ds):
                raise OFAError(f"depths[{s}] must list block counts >= 1, got {list(ds)!r}")
        self.space = SearchSpace(
            resolutions=tuple(sorted(set(int(r) for r in resolutions))),
            depths=tuple(tuple(sorted(set(ds))) for ds in depths),
            widths=width_choices,
            expands=tuple(self._dedupe(ratios, c, self.max_mid(s)) for s, c in enumerate(self.stage_channels)),
            stem=None if self.stem_tied else self._dedupe(stem_mults, self.stem_channels),
        )

    # -- channel counts --------------------------------------------------------------------------------------
    def channels(self, mult: float, maximum: int) -> int:
        return min(maximum, make_divisible(mult * maximum, self.divisor))

    def max_mid(self, s: int) -> int:
        exact = self.max_expand * self.stage_channels[s]
        # A whole number is kept as is, so the largest arch is exactly the network it was derived from (a timm
        # model's own middle width); otherwise it is rounded to the divisor like every other choice.
        if abs(exact - round(exact)) < 1e-6:
            return round(exact)
        return make_divisible(exact, self.divisor)

    def mid(self, s: int, expand: float) -> int:
        key = (s, expand)
        count = self._mids.get(key)
        if count is None:  # the search's cost model asks this ~16 times per arch, for a handful of distinct keys
            count = self._mids[key] = min(self.max_mid(s), make_divisible(expand * self.stage_channels[s],
                                                                          self.divisor))
        return count

    def _dedupe(self, mults: Sequence[float], maximum: int, cap: int | None = None) -> tuple[float, ...]:
        kept: dict[int, float] = {}
        for m in sorted(set(float(x) for x in mults), reverse=True):
            count = min(cap, make_divisible(m * maximum, self.divisor)) if cap else self.channels(m, maximum)
            if m == max(mults):
                count = cap or maximum
            kept.setdefault(count, m)
        return tuple(sorted(kept.values()))

    def stem_width(self, arch: Arch) -> int:
        if self.stem_tied:
            return self.channels(arch.widths[0], self.stage_channels[0])
        return self.channels(arch.stem, self.stem_channels)

    def blocks(self, arch: Arch) -> list[list[StaticBlock]]:
        """The channel counts of every active block of ``arch``."""
        stages, c_in = [], self.stem_width(arch)
        for s, depth in enumerate(arch.depths):
            out = self.channels(arch.widths[s], self.stage_channels[s])
            stage = []
            for b in range(depth):
                stride = self.strides[s] if b == 0 else 1
                stage.append(StaticBlock(c_in, self.mid(s, arch.expands[s][b]), out, stride,
                                         b == 0 and self.projections[s]))
                c_in = out
            stages.append(stage)
        return stages

    # -- static description and costs ------------------------------------------------------------------------
    def static_spec(self, arch: Arch) -> dict[str, Any]:
        """JSON description of the dense network of ``arch`` (what :class:`StaticResNet` builds)."""
        return {
            "family": "resnet", "block": self.block, "in_chans": self.in_chans, "num_classes": self.num_classes,
            "stem_type": self.stem_type, "stem": self.stem_width(arch), "resolution": arch.resolution,
            "stages": [[[b.in_c, b.mid, b.out, b.stride, b.downsample] for b in stage]
                       for stage in self.blocks(arch)],
        }

    def costs(self, arch: Arch) -> tuple[int, int]:
        return spec_costs(self.static_spec(arch))


def spec_costs(spec: dict[str, Any]) -> tuple[int, int]:
    """(MACs, parameters) of a static ResNet spec at batch 1.

    MACs count convolutions and the classifier (what ``torch.utils.flop_counter`` counts, halved); BatchNorm,
    activations, pooling and additions are not counted. Parameters are every weight and bias, BN included.
    """
    size, c_in, stem = spec["resolution"], spec["in_chans"], spec["stem"]
    macs = params = 0
    if spec["stem_type"] == "conv7_pool":
        size = _conv_out(size, 7, 2, 3)
        macs += size * size * 49 * c_in * stem
        params += 49 * c_in * stem + 2 * stem
        size = _conv_out(size, 3, 2, 1)
    else:
        size = _conv_out(size, 3, 1, 1)
        macs += size * size * 9 * c_in * stem
        params += 9 * c_in * stem + 2 * stem
    bottleneck = spec["block"] == "bottleneck"
    for stage in spec["stages"]:
        for c_in, mid, out, stride, downsample in stage:
            out_size = _conv_out(size, 3, stride, 1)
            if bottleneck:
                macs += size * size * c_in * mid + out_size * out_size * (9 * mid * mid + mid * out)
                params += c_in * mid + 9 * mid * mid + mid * out + 2 * (2 * mid + out)
            else:
                macs += out_size * out_size * 9 * (c_in * mid + mid * out)
                params += 9 * (c_in * mid + mid * out) + 2 * (mid + out)
            if downsample:
                macs += out_size * out_size * c_in * out
                params += c_in * out + 2 * out
            size = out_size
    last = spec["stages"][-1][-1][2]
    macs += last * spec["num_classes"]
    params += last * spec["num_classes"] + spec["num_classes"]
    return macs, params
