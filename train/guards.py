"""What watches a training run on its user's behalf: a Ctrl-C that stops it cleanly, and a throughput hint.

``StopRequest`` turns the first Ctrl-C (or SIGTERM, which torchrun sends its workers) into a request the loop
honours after the current step, with a checkpoint; a second one stops at once. ``ThroughputWatch`` says once
when other processes take the cores: the process got under half the CPU time its threads could use, or an epoch
ran at a third of its phase's best speed (7.6x slower measured on 2 cores with too many threads).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
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
    """One hint per run when other processes take the cores: this process got under half the CPU time its threads
    could use during an epoch, or an epoch ran at a third of its phase's best speed."""

    def __init__(self, announce: bool = True) -> None:
        self.best: dict[int, float] = {}
        self.hinted, self.announce = False, announce
        self._wall0 = self._cpu0 = 0.0

    def start(self) -> None:
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()

    def update(self, phase: int, images_per_s: float) -> None:
        threads = torch.get_num_threads()
        wall, cpu = time.perf_counter() - self._wall0, time.process_time() - self._cpu0
        share = cpu / max(wall * threads, 1e-9)
        best = self.best.setdefault(phase, images_per_s)
        self.best[phase] = max(best, images_per_s)
        if images_per_s < best / 3:
            self._hint(f"training slowed from {best:.0f} to {images_per_s:.0f} images/s")
        elif share < 0.5 and threads > 1 and wall > 2.0:
            self._hint(f"this process got {share:.0%} of the CPU time its {threads} threads could use")

    def _hint(self, what: str) -> None:
        if self.hinted or not self.announce:
            return
        self.hinted = True
        tqdm.write(f"note: {what}; other processes are competing for the cores (this one uses "
                   f"{torch.get_num_threads()} threads): give each process fewer with --threads (e.g. 1 when "
                   "several run side by side; 7.6x faster measured on 2 cores)", file=sys.stderr)
