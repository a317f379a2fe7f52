"""Where a training run is in its schedule: the one record a checkpoint needs to continue at the next step.

A checkpoint stores it as the plain dict ``to_dict`` gives (its ``position`` entry), so checkpoints written before
this class existed load with ``from_dict``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class Position:
    phase: int = 0         # index into the config's phases; len(phases) once training is done
    epoch: int = 0         # epochs finished in this phase
    batch: int = 0         # steps taken in this epoch (the loader starts there on resume)
    global_step: int = 0   # optimizer steps over the whole run: names checkpoints, seeds the sampled subnets
    phase_step: int = 0    # optimizer steps in this phase: the scheduler's update count
    # the epoch's running training loss travels with the position, so a resumed epoch reports the same mean
    loss_sum: float = 0.0
    loss_n: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Position:
        return cls(**{f.name: values[f.name] for f in fields(cls)})

    def __getitem__(self, key: str) -> Any:
        """``pos["global_step"]``: the dict it was before, as ``on_step`` callbacks read it."""
        return getattr(self, key)

    def stepped(self) -> None:
        self.batch += 1
        self.global_step += 1
        self.phase_step += 1

    def add_loss(self, loss: float) -> None:
        self.loss_sum += loss
        self.loss_n += 1

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.loss_n, 1)

    def next_epoch(self) -> None:
        self.epoch, self.batch, self.loss_sum, self.loss_n = self.epoch + 1, 0, 0.0, 0

    def next_phase(self) -> None:
        self.phase, self.epoch, self.batch, self.phase_step = self.phase + 1, 0, 0, 0
