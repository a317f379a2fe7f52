"""Exporting a dense network: ONNX (checked with onnxruntime) and ``torch.export`` programs.

Both exports take the BN-folded network with a dynamic batch dimension. The ONNX file is compared against the
PyTorch network (unfolded, as stored) on random inputs; the result of that check goes in the deploy report.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ofa.errors import OFAError
from ofa.io import atomic_write

ONNX_OPSET = 18  # >= 17; 18 is the exporter's native opset (no version conversion step)
MAX_BATCH = 4096
EXPORT_PACKAGES = ("onnx", "onnxruntime", "onnxscript")


def require_export_packages() -> None:
    """Fail before any work when the ONNX packages (the ``export`` extra) are missing."""
    import importlib.util

    missing = [name for name in EXPORT_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise OFAError(f"exporting needs {', '.join(missing)}: pip install 'ofa-supernet[export]'")


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warnings per call; keep a deploy's output to our own lines."""
    out = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            warnings.simplefilter("ignore")
            yield out
    finally:
        logging.disable(previous)


def _example(model: nn.Module, batch: int = 2) -> torch.Tensor:
    c, h, w = model.description["data_config"]["input_size"]
    return torch.randn(batch, c, h, w)


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = ONNX_OPSET) -> Path:
    """Write ``model`` (eval mode, usually BN-folded) to ONNX with a dynamic batch dimension, atomically."""
    path = Path(path)
    x = _example(model)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)

    def write(tmp: str) -> None:
        with _quiet() as log:
            try:
                torch.onnx.export(model.eval(), (x,), tmp, opset_version=opset, dynamo=True, external_data=False,
                                  input_names=["input"], output_names=["logits"],
                                  dynamic_shapes={"x": {0: batch}})
            except Exception as e:
                raise OFAError(f"ONNX export failed ({type(e).__name__}: {e}); exporter log: "
                               f"{log.getvalue()[-300:]!r}") from None

    atomic_write(path, write)
    return path


def verify_onnx(path: str | os.PathLike, reference: nn.Module, batches: tuple[int, ...] = (1, 3),
                tolerance: float = 1e-4, seed: int = 0) -> dict[str, Any]:
    """Run the ONNX file with onnxruntime and compare with ``reference`` on random inputs of several batch sizes."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    generator = torch.Generator().manual_seed(seed)
    c, h, w = reference.description["data_config"]["input_size"]
    diff, scale = 0.0, 0.0
    reference.eval()
    with torch.inference_mode():
        for b in batches:
            x = torch.randn(b, c, h, w, generator=generator)
            ours, theirs = session.run(None, {name: x.numpy()})[0], reference(x)
            diff = max(diff, float((torch.from_numpy(ours) - theirs).abs().max()))
            scale = max(scale, float(theirs.abs().max()))
    # float32 rounding grows with the outputs' size (onnxruntime fuses and reorders differently): the tolerance is
    # relative to the largest output once outputs exceed 1
    allowed = tolerance * max(1.0, scale)
    return {"runtime": f"onnxruntime {ort.__version__}", "opset": opset, "batches": list(batches),
            "max_abs_diff": diff, "output_scale": scale, "tolerance": tolerance, "allowed_diff": allowed,
            "passed": diff <= allowed}


def export_program(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write a ``torch.export`` program (``.pt2``) with a dynamic batch; ``torch.export.load`` runs it."""
    path = Path(path)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with _quiet():
        program = torch.export.export(model.eval(), (_example(model),), dynamic_shapes={"x": {0: batch}})
    # torch.export wants a name ending in .pt2, so the temporary file keeps that suffix.
    atomic_write(path, lambda tmp: torch.export.save(program, tmp), suffix=".tmp.pt2")
    return path


def verify_program(path: str | os.PathLike, reference: nn.Module, tolerance: float = 1e-4) -> dict[str, Any]:
    with _quiet():
        program = torch.export.load(str(path))
    x = _example(reference, 3)
    with torch.inference_mode():
        diff = float((program.module()(x) - reference.eval()(x)).abs().max())
    return {"max_abs_diff": diff, "tolerance": tolerance, "passed": diff <= tolerance}
