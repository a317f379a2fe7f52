"""metrics.csv: one row per evaluation (phase, epoch, step, subnet, validation loss and top-1 with its interval).

Rows are appended by rewriting the file atomically, so a crash never leaves a half-written row; a resumed run
first cuts the file back to the rows its checkpoint had seen, so no evaluation appears twice.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ofa.io import atomic_write

COLUMNS = ("phase", "epoch", "step", "subnet", "resolution", "macs", "val_loss", "val_top1", "ci_low", "ci_high",
           "train_loss", "lr", "images_per_s", "arch")


class MetricsLog:
    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = Path(path), enabled

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    @property
    def rows_written(self) -> int:
        return len(self.read())

    def _write(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(buf.getvalue()))

    def append(self, row: dict[str, Any]) -> None:
        if self.enabled:
            self._write(self.read() + [row])

    def truncate(self, n: int) -> None:
        if self.enabled and self.path.is_file():
            self._write(self.read()[:n])
