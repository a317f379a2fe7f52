"""Where each stage's files lie in a run directory (``DESIGN.md``, "Run directory")::

    RUN/
      config.yaml  supernet.safetensors + supernet.json  metrics.csv  checkpoints/  logs/   (ofa train)
      latency/DEVICE.json, latency/DEVICE.int8.json                                          (ofa profile)
      search/  accuracy_table.csv  predictor.*  study.db  pareto.csv  pareto.png  search_log.csv
               selected.json (Selection)  report.json (SearchReport)                         (ofa search)
      deploy/DEVICE/  model.*  report.json (DeployReport)
      deploy/slimmable/  slimmable.*  report.json (SlimmableReport)  report.md               (ofa deploy)

Train, search and deploy talk only through these files; this class is the one place that names them.
"""

from __future__ import annotations

import os
from pathlib import Path


class RunDir:
    """The paths of one run directory (nothing is read or created here)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- ofa train ------------------------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        """The resolved training configuration (YAML)."""
        return self.path / "config.yaml"

    @property
    def supernet(self) -> Path:
        """The final weights (its description ``supernet.json`` beside it)."""
        return self.path / "supernet.safetensors"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def rank_log(self, rank: int) -> Path:
        """One training process's timing and memory log."""
        return self.path / "logs" / f"rank{rank}.json"

    # -- ofa profile ----------------------------------------------------------------------------------------------
    @property
    def latency(self) -> Path:
        """The folder of latency tables, one per device and precision."""
        return self.path / "latency"

    def latency_table(self, device: str, precision: str = "float32") -> Path:
        """``latency/DEVICE.json`` (float32) or ``latency/DEVICE.int8.json``."""
        from ..latency import table_key

        return self.latency / f"{table_key(device, precision)}.json"

    # -- ofa search -----------------------------------------------------------------------------------------------
    @property
    def search(self) -> Path:
        return self.path / "search"

    @property
    def selection(self) -> Path:
        """``search/selected.json``: what ``ofa deploy`` deploys (:class:`Selection`)."""
        return self.search / "selected.json"

    @property
    def search_report(self) -> Path:
        """``search/report.json`` (:class:`SearchReport`)."""
        return self.search / "report.json"

    @property
    def accuracy_table(self) -> Path:
        return self.search / "accuracy_table.csv"

    @property
    def predictor(self) -> Path:
        """The accuracy predictor's weights (its ``predictor.json`` beside them)."""
        return self.search / "predictor.safetensors"

    @property
    def study_db(self) -> Path:
        """The default Optuna storage (SQLite)."""
        return self.search / "study.db"

    @property
    def pareto_csv(self) -> Path:
        return self.search / "pareto.csv"

    @property
    def pareto_png(self) -> Path:
        return self.search / "pareto.png"

    @property
    def search_log(self) -> Path:
        return self.search / "search_log.csv"

    # -- ofa deploy -----------------------------------------------------------------------------------------------
    @property
    def deploy(self) -> Path:
        return self.path / "deploy"

    def device_dir(self, device: str) -> Path:
        """``deploy/DEVICE/``: one device's artifacts."""
        return self.deploy / device

    def device_report(self, device: str) -> Path:
        """``deploy/DEVICE/report.json`` (:class:`DeployReport`)."""
        return self.device_dir(device) / "report.json"

    @property
    def slimmable_dir(self) -> Path:
        return self.deploy / "slimmable"

    @property
    def slimmable_report(self) -> Path:
        """``deploy/slimmable/report.json`` (:class:`SlimmableReport`)."""
        return self.slimmable_dir / "report.json"

    @property
    def report(self) -> Path:
        """``report.md``: one table over every deployed device."""
        return self.path / "report.md"

    def deployed_devices(self) -> list[str]:
        """The devices with a report under ``deploy/``, sorted (not the slimmable network, not the temporary
        folders of a deploy in progress)."""
        return sorted(p.parent.name for p in self.deploy.glob("*/report.json")
                      if p.parent != self.slimmable_dir and not p.parent.name.startswith("."))
