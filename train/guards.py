"""What watches a training run on its user's behalf: a Ctrl-C that stops it cleanly, and a throughput hint.

``StopRequest`` turns the first Ctrl-C (or SIGTERM, which torchrun sends its workers) into a request the loop
honours after the current step, with a checkpoint; a second one stops at once. ``ThroughputWatch`` says once
when an epoch runs at a third of its phase's best speed: on a CPU that is almost always other processes
competing for the cores (7.6x slower measured on 2 cores).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

import torch
from tqdm import tqdm


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped the run between two steps, after saving a checkpoint."""


class StopRequest:
    def __init__(self, announce: bool = True) -> None:
        self.asked, self.announce, self._previous = False, announce, {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # only it may handle signals
            self._previous = {sig: signal.signal(sig, self._ask) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _ask(self, signum, frame) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        if self.announce:
            tqdm.write("stopping after this step with a checkpoint (Ctrl-C again to stop at once)", file=sys.stderr)

    def agreed(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None, device) -> bool:
        """Whether to stop now; with several processes (``reduce`` sums over them) all stop at the same step,
        so that one consistent checkpoint is saved."""
        if reduce is None:
            return self.asked
        return bool(reduce(torch.tensor([float(self.asked)], device=device)).item() > 0)


class ThroughputWatch:
    def __init__(self) -> None:
        self.best: dict[int, float] = {}
        self.hinted = False

    def update(self, phase: int, images_per_s: float) -> None:
        best = self.best.setdefault(phase, images_per_s)
        self.best[phase] = max(best, images_per_s)
        if images_per_s < best / 3 and not self.hinted:
            self.hinted = True
            tqdm.write(f"note: training slowed from {best:.0f} to {images_per_s:.0f} images/s; other processes may "
                       f"be competing for the cores (this one uses {torch.get_num_threads()} threads): give each "
                       "process fewer with --threads (e.g. 1 when several run side by side)", file=sys.stderr)
