"""Training checkpoints: the whole resumable state in one file, written atomically, the last few kept.

A checkpoint holds tensors and plain Python values only (model, optimizer, scheduler, scaler, teacher, RNG
states, position in the schedule), so it loads with ``torch.load(weights_only=True)``: nothing is unpickled.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from ofa.errors import OFAError
from ofa.io import atomic_write
from ofa.rundir import RunDir

PATTERN = re.compile(r"^step(\d{9})\.pt$")


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return RunDir(run_dir).checkpoints


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first (temporary files of an interrupted write are ignored)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if PATTERN.match(p.name))


def save_checkpoint(run_dir: str | os.PathLike, global_step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as ``checkpoints/stepNNNNNNNNN.pt`` (temporary file, then rename); keep the last ``keep``."""
    path = checkpoint_dir(run_dir) / f"step{global_step:09d}.pt"
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign files raise several types
        raise OFAError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); "
                       "delete it to resume from the one before") from None


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    import random

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
