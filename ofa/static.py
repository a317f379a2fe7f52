"""The base of dense networks extracted from a supernet.

A static network is built from a JSON ``description`` (family, dense spec, arch, resolution, preprocessing) that
is enough to rebuild it without the supernet, and a layer factory: plain ``Conv2d``/``BatchNorm2d``/``Linear`` by
default (:data:`ofa.factory.STATIC`). A family subclass inherits its layout (the one its supernet
shares), which builds the layers in ``build_layout(spec, layers)`` and runs them in ``run_layout(x, depths)``:
every block, or the first ``depths[s]`` blocks of each stage (a runtime-slimmable network runs one body at
several depths).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .errors import OFAError
from .factory import STATIC, Layers


class StaticNet(nn.Module):
    family: str = ""

    def __init__(self, description: dict[str, Any], layers: Layers = STATIC) -> None:
        super().__init__()
        self.description = copy.deepcopy(description)
        self.build(self.spec, layers)

    @property
    def spec(self) -> dict[str, Any]:
        return self.description["spec"]

    @property
    def class_names(self) -> list[str] | None:
        """Output ``i``'s class name (from the dataset the network was deployed with), where it had names."""
        return self.description.get("class_names")

    @property
    def resolution(self) -> int:
        return self.description["spec"]["resolution"]

    def build(self, spec: dict[str, Any], layers: Layers) -> None:
        self.build_layout(spec, layers)

    def run(self, x: torch.Tensor, depths: Sequence[int] | None = None) -> torch.Tensor:
        """Every block, or the first ``depths[s]`` blocks of each stage."""
        return self.run_layout(x, self.stage_depths() if depths is None else depths)

    def stage_depths(self) -> list[int]:
        """How many blocks each elastic stage of this network has."""
        return [len(stage) for stage in self.spec["stages"]]

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """The (convolution, BatchNorm right after it) pairs of this module's own layers, for BN folding; blocks
        that declare ``conv_bn_pairs`` fold their own (names are relative to the module that declares them)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # As the supernet does: a dense network silently accepts other sizes (convolutions and pooling adapt)
        # and answers worse, where ONNX Runtime would refuse the same input.
        r, c = self.resolution, self.spec["in_chans"]
        if x.dim() != 4 or x.shape[1] != c or x.shape[2] != r or x.shape[3] != r:
            raise OFAError(f"this network takes inputs of shape (N, {c}, {r}, {r}) (it was deployed at resolution "
                           f"{r}); got {tuple(x.shape)}: resize with its data_config's preprocessing")
        return self.run(x)


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Qualified names of every (convolution, BatchNorm) pair the modules of ``model`` declare."""
    pairs = []
    for prefix, module in model.named_modules():
        if hasattr(module, "conv_bn_pairs"):
            dot = f"{prefix}." if prefix else ""
            pairs += [(dot + conv, dot + bn) for conv, bn in module.conv_bn_pairs()]
    return pairs
