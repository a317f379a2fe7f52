"""The base of dense networks extracted from a supernet.

A static network is built from plain ``Conv2d``/``BatchNorm2d``/``Linear`` layers and a JSON ``description``
(family, static spec, arch, resolution, preprocessing) that is enough to rebuild it without the supernet.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn


class StaticNet(nn.Module):
    family: str = ""

    def __init__(self, description: dict[str, Any]) -> None:
        super().__init__()
        self.description = copy.deepcopy(description)

    @property
    def spec(self) -> dict[str, Any]:
        return self.description["spec"]

    @property
    def resolution(self) -> int:
        return self.description["spec"]["resolution"]
