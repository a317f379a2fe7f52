"""The reports a run directory holds: ``deploy/DEVICE/report.json``, ``deploy/slimmable/report.json`` and
``search/report.json``. Their nested parts stay plain JSON objects (each is written in one place and read
by key in one table); the top level is typed, so a missing or renamed entry is caught where it is read."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

from .paths import RunDir
from .record import FileRecord


@dataclass(kw_only=True)
class DeployReport(FileRecord):
    """One deployed device (``deploy/DEVICE/report.json``): what was deployed, checked and measured."""

    FILE: ClassVar[str] = "report.json"

    device: str
    precision: str = "float32"
    arch: dict[str, Any]  # Arch.to_dict()
    budget: dict[str, Any] | None = None  # the search's budget for the device (Budget.to_dict())
    macs: int
    params: int
    preprocessing: dict[str, Any] | None = None  # the eval data_config at the subnet's resolution
    files: dict[str, int] | None = None  # file name -> bytes
    bn_folded_for_inference: bool = True
    onnx_check: dict[str, Any]  # {"passed", "max_abs_diff", "tolerance", "opset", ...}
    torch_export_check: dict[str, Any] | None = None
    latency: dict[str, Any]  # host, machine, form, statistic, and per batch ("batch1", "batch32") the timing
    latency_predicted_ms: float | None = None  # by the device's latency table
    latency_budget_ms: float | None = None
    within_latency_budget: bool | None = None  # the batch-1 median of the form the device runs, against the budget
    latency_verified_by_search: dict[str, Any] | None = None
    latency_table: dict[str, Any] | None = None  # the table that predicted: device, path, runtime, precision, ...
    int8: dict[str, Any] | None = None  # the int8 model against the float one (deploy.quantize.int8_report)
    top1: dict[str, Any]  # {"predicted": the search's, "measured": test split, "measured_by_search"}

    @classmethod
    def read_run(cls, run: str | os.PathLike, device: str) -> DeployReport:
        """``RUN/deploy/DEVICE/report.json``."""
        return cls.read(RunDir(run).device_report(device), hint="deploy the device again")

    @property
    def measured(self) -> dict[str, Any]:
        """Test top-1 of the deployed model: {"split", "top1", "ci_low", "ci_high", "loss", "n", ...}."""
        return self.top1["measured"]

    @property
    def batch1(self) -> dict[str, Any]:
        """The batch-1 latency: median_ms, p10_ms, p90_ms, threads, repeats, warmup..."""
        return self.latency["batch1"]


@dataclass(kw_only=True)
class SlimmableReport(FileRecord):
    """The runtime-slimmable network (``deploy/slimmable/report.json``): its widths against the dense ones."""

    FILE: ClassVar[str] = "report.json"

    widths: list[str]  # device names, smallest first
    latency_ms_batch1: list[float] | None = None  # what the latency controller picks by
    threads: int | None = None
    mode: str
    memory_limit: Any = None
    memory_bytes: dict[str, int]
    derived_widths: list[str] | None = None  # the widths at dense speed (older reports: all of them)
    memory_bytes_after_drop_stored: int
    largest_dense_bytes: int
    timing: dict[str, Any]  # {"statistic", "how", "repeats", "warmup", "per_width": [per batch, slimmable vs dense]}
    max_abs_diff_vs_dense: list[float]
    macs: list[int] | None = None
    files: dict[str, int] | None = None

    @classmethod
    def read_run(cls, run: str | os.PathLike) -> SlimmableReport:
        return cls.read(RunDir(run).slimmable_report, hint="deploy with --slimmable again")


@dataclass(kw_only=True)
class SearchReport(FileRecord):
    """What a search did (``search/report.json``): predictor quality, effort, and per device how it chose."""

    FILE: ClassVar[str] = "report.json"

    predictor: dict[str, Any]  # {"family", "metric", and its held-out quality}
    table_size: int | None = None
    mode: str | None = None
    effort: str | None = None
    generations: int | None = None
    population: int | None = None
    devices: list[dict[str, Any]]  # per device: budget, seconds, predicted, measured, latency, nesting cost

    @classmethod
    def read_run(cls, run: str | os.PathLike) -> SearchReport:
        return cls.read(RunDir(run).search_report, hint="run `ofa search` again")
