"""The end-of-epoch measurement: the largest, middle and smallest subnet of a phase's space on the validation
images, each with its BatchNorm statistics re-estimated on the calibration images first."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import nn

import ofa
from ofa.data import Data
from ofa.space import Arch, SearchSpace

from .config import EvalConfig


def middle_arch(space: SearchSpace) -> Arch:
    """The arch taking the middle choice of every dimension (a representative mid-size subnet)."""
    return space.uniform(lambda choices: sorted(choices)[len(choices) // 2])


def calib_loader(data: Data, resolution: int, eval_config: EvalConfig):
    return data.eval_loader("calib", resolution, batch_size=eval_config.batch_size, limit=eval_config.calib_images)


def evaluate_subnets(net: nn.Module, data: Data, space: SearchSpace,
                     eval_config: EvalConfig) -> Iterator[tuple[str, Arch, Any]]:
    """``(label, arch, metrics)`` for the largest, middle and smallest arch (each once where they coincide), one
    at a time so that the caller records each before the next is measured."""
    picks = [("largest", space.largest()), ("middle", middle_arch(space)), ("smallest", space.smallest())]
    seen = set()
    for label, arch in picks:
        if arch in seen:
            continue
        seen.add(arch)
        val = data.eval_loader("val", arch.resolution, batch_size=eval_config.batch_size,
                               limit=eval_config.val_images)
        # Every subnet, the largest included, is measured with statistics re-estimated on the calibration
        # images: the stored ones are a running average over augmented training batches that lags the
        # weights; on ofa_mbv3_tiny they cost the largest 32 pp after 80 steps and ~1 pp at the end.
        with net.active(arch), ofa.calibrate_bn(net, calib_loader(data, arch.resolution, eval_config)):
            metrics = ofa.evaluate(net, val)
        yield label, arch, metrics
