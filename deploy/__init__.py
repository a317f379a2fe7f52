"""deploy: dense subnet artifacts, verified export, latency tables and runtime-slimmable networks.

``deploy.load(path)`` needs only ``ofa`` and torch; a deploy run reads its dataset through ``ofa.data`` (on first
use). Nothing here imports ``train`` or ``search``.
"""

from __future__ import annotations

from ofa.lazy import lazy_exports

_EXPORTS = {
    "load": "artifact", "fold_bn": "fold", "measure_latency": "measure",
    "export_onnx": "export", "verify_onnx": "export", "export_program": "export",
    "SlimmableNet": "slimmable", "LatencyController": "slimmable",
    "profile": "profile", "ProfileSettings": "profile",
    "deploy": "run", "deploy_run": "run", "DeployConfig": "config", "DeployResult": "run",
    "write_report": "report",
    "QuantSettings": "quantize", "quantize_onnx": "quantize", "int8_report": "quantize",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
