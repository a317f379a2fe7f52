"""What ``ofa deploy`` is asked to do: one dataclass, checked when it is made (before any work)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ofa.errors import OFAError


@dataclass
class DeployConfig:
    run: Path  # the run directory (with search/selected.json)
    devices: list[str] | None = None  # deploy only these (default: every device the search chose)
    slimmable: bool = False  # also one runtime-slimmable network over the (nested) devices
    latency_table: str | os.PathLike | None = None  # predict with this table (default: RUN/latency/DEVICE.json)
    calib_batches: int = 32  # BN calibration batches (also int8 calibration)
    batch_size: int = 64  # images per calibration batch
    repeats: int = 30  # timed forward passes per latency
    warmup: int = 5
    threads: int | None = None  # while timing (default: the latency table's, else torch's)
    progress: bool = True
    int8: bool = False  # an int8 model for every device (devices whose budget says int8 get one anyway)
    int8_tolerance_pp: float = 1.0  # flag an int8 drop whose 95% interval lies above this many points
    force: bool = False  # deploy subnets at chance level on test

    def __post_init__(self) -> None:
        self.run = Path(self.run)
        tolerance = self.int8_tolerance_pp
        if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
            raise OFAError(f"the int8 tolerance must be a number of percentage points >= 0, got {tolerance!r}")
        for name, low in (("calib_batches", 1), ("batch_size", 1), ("repeats", 1), ("warmup", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise OFAError(f"deploy's {name.replace('_', '-')} must be an integer >= {low}, got {value!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise OFAError(f"deploy's threads must be a positive integer, got {self.threads!r}")
