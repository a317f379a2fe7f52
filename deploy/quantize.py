"""Int8 deployment: static post-training quantization of a deployed subnet with ONNX Runtime, and the measurements
that say what it costs and buys (test top-1 against the float model with a paired interval, latency, file size).

ONNX Runtime's ``quantize_static`` does the work: QDQ format (QuantizeLinear/DequantizeLinear pairs around each
operator, which the runtime's graph optimizer fuses into integer kernels), int8 weights per output channel and
uint8 activations whose ranges come from the run's calibration split (min/max). Unsigned activations: on an x86
CPU without VNNI the runtime's u8 x s8 kernels are its fast path; int8 x int8 activations ran at 0.89x the float
model's time against 0.52x on ofa_resnet18 here (``benchmarks/deploy.py`` measures the variants). Weights use 7
of their 8 bits (``reduce_range``): those u8 x s8 kernels add pairs of products in 16 bits, which full-range
per-channel weights overflow; on this AVX2 CPU that cost the demo's largest subnet 4.3 pp of test top-1, 0.4 pp
with 7-bit weights, at the same speed.

The same conversion serves latency tables (``ofa profile --int8``): every unit (and every validation subnet) is
quantized and timed in onnxruntime. Exporting one module at a time with the torch.export-based ONNX exporter
costs about 3 s each, so modules are exported together, many to one graph, quantized once, and each one's own
subgraph cut out again with ``onnx.utils.Extractor``.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import ofa
from ofa.errors import OFAError
from ofa.io import atomic_write
from ofa.timing import summarize, time_pair

from .export import ONNX_OPSET, _quiet, require_export_packages


@dataclass(frozen=True)
class QuantSettings:
    """How ``quantize_static`` is called; recorded in every report and int8 latency table."""

    quant_format: str = "qdq"         # or "qoperator" (QLinearConv and friends written out)
    per_channel: bool = True          # one weight scale per output channel
    activation_type: str = "uint8"    # or "int8"
    weight_type: str = "int8"
    reduce_range: bool = True         # 7-bit weights: no 16-bit overflow in pre-VNNI x86 u8 x s8 kernels
    calibrate_method: str = "minmax"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def require_int8_packages() -> None:
    """Fail before any work when int8 is asked for without the ONNX packages (the ``export`` extra)."""
    try:
        require_export_packages()
    except OFAError as e:
        raise OFAError(f"int8 needs ONNX Runtime's quantization tools: {e}") from None
    if importlib.util.find_spec("onnxruntime.quantization") is None:
        raise OFAError("int8 needs onnxruntime.quantization, which this onnxruntime lacks: "
                       "pip install 'ofa-supernet[export]'")


class _Feeds:
    """The quantizer's calibration reader over prepared feeds (input name -> batch). ONNX Runtime's
    ``CalibrationDataReader`` accepts any class with ``get_next`` as a subclass, so this one needs no import of
    onnxruntime until it is used."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike, feeds: Iterable[dict[str, np.ndarray]],
                  settings: QuantSettings | None = None) -> Path:
    """Quantize the float ONNX model ``src`` into ``dst`` (atomically), calibrated on ``feeds`` (input name ->
    batch). The model is pre-processed first (shape inference and the runtime's basic graph fusions), as the
    quantizer's documentation asks."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    s = settings or QuantSettings()
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    reader = _Feeds(feeds)
    dst = Path(dst)

    def write(tmp: str) -> None:
        with tempfile.TemporaryDirectory() as work, _quiet():
            pre = str(Path(work) / "pre.onnx")
            quant_pre_process(str(src), pre)
            quantize_static(pre, tmp, reader,
                            quant_format={"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[s.quant_format],
                            per_channel=s.per_channel, reduce_range=s.reduce_range,
                            activation_type=types[s.activation_type], weight_type=types[s.weight_type],
                            calibrate_method={"minmax": CalibrationMethod.MinMax}[s.calibrate_method],
                            extra_options={"CalibMaxIntermediateOutputs": 16})  # bounded memory on big splits

    atomic_write(dst, write, suffix=".tmp.onnx")
    return dst


def session(model: str | os.PathLike | bytes, threads: int):
    """An onnxruntime CPU session with ``threads`` intra-op threads: the one setting every timing here uses."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


class OrtModel:
    """An onnxruntime session called like a module on a torch batch (what ``ofa.timing`` times). ``baseline``, when
    set, is the same call on a graph that does nothing (``deploy.profile`` subtracts its time from a unit's)."""

    def __init__(self, sess, baseline: OrtModel | None = None) -> None:
        self.session = sess
        self.input = sess.get_inputs()[0].name
        self.baseline = baseline

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        return self.session.run(None, {self.input: x.numpy()})[0]

    def eval(self) -> OrtModel:  # timing helpers call .eval() on what they time
        return self


# -- measurements of one deployed subnet --------------------------------------------------------------------------
def hits(model: OrtModel, batches: Iterable) -> tuple[torch.Tensor, ofa.Metrics]:
    """Which images ``model`` classifies correctly (in loader order), and its top-1 and loss over them."""
    logits, labels = [], []
    for x, y in batches:
        logits.append(torch.from_numpy(model(x)))
        labels.append(y)
    logits_, labels_ = torch.cat(logits), torch.cat(labels)
    # evaluate() over the logits themselves: its loss, top-1 and interval, without another pass of the network
    return logits_.argmax(1) == labels_, ofa.evaluate(nn.Identity(), [(logits_, labels_)])


def paired_drop(reference: torch.Tensor, other: torch.Tensor) -> tuple[float, float, float]:
    """Mean top-1 drop (reference minus other, pp) over the same images, with its paired 95% normal interval:
    the test-sampling noise of the difference, far narrower than two separate intervals."""
    diff = 100 * (reference.double() - other.double())
    mean, half = diff.mean().item(), 1.96 * diff.std().item() / math.sqrt(diff.numel())
    return mean, mean - half, mean + half


def int8_report(folder: Path, data, resolution: int, calib_batches: int, batch_size: int, threads: int,
                repeats: int, warmup: int, tolerance_pp: float, settings: QuantSettings | None = None) -> dict:
    """Quantize ``folder/model.onnx`` into ``folder/model.int8.onnx`` (calibrated on the run's calib split, never
    test) and measure both models in onnxruntime: test top-1 with the drop's paired interval, batch-1 latency
    (interleaved, so both see the same load) and file size. The drop is flagged when its interval lies wholly
    above ``tolerance_pp``."""
    import onnxruntime as ort

    settings = settings or QuantSettings()
    calib = data.eval_loader("calib", resolution, batch_size=batch_size)
    feeds = [{"input": x.numpy()} for x, _ in itertools.islice(calib, calib_batches)]
    quantize_onnx(folder / "model.onnx", folder / "model.int8.onnx", feeds, settings)
    models = {p: OrtModel(session(folder / name, threads))
              for p, name in (("float32", "model.onnx"), ("int8", "model.int8.onnx"))}
    test = data.eval_loader("test", resolution, batch_size=256)
    measured = {p: hits(m, test) for p, m in models.items()}
    drop, low, high = paired_drop(measured["float32"][0], measured["int8"][0])
    x = torch.randn(1, feeds[0]["input"].shape[1], resolution, resolution)
    times = dict(zip(models, time_pair(models["float32"], models["int8"], x, repeats, warmup)))  # sessions' threads
    latency = {p: summarize(t) for p, t in times.items()}
    sizes = {p: (folder / name).stat().st_size for p, name in (("float32", "model.onnx"), ("int8", "model.int8.onnx"))}
    calibration = {"split": "calib", "images": sum(len(f["input"]) for f in feeds)}
    return {
        "file": "model.int8.onnx",
        "quantization": {"tool": "onnxruntime.quantization.quantize_static", **settings.to_dict(),
                         "calibration": calibration},
        "top1": {"split": "test", **{p: {**m.to_dict(), "n": m.total} for p, (_, m) in measured.items()},
                 "drop_pp": drop, "drop_ci95_pp": [low, high], "tolerance_pp": tolerance_pp,
                 "flagged": low > tolerance_pp},
        "latency": {"runtime": f"onnxruntime {ort.__version__}", "batch": 1, "threads": threads, "repeats": repeats,
                    "warmup": warmup, "how": "float32 and int8 interleaved", "statistic": "median", **latency,
                    "ratio": latency["int8"]["median_ms"] / latency["float32"]["median_ms"]},
        "size_bytes": {**sizes, "ratio": sizes["int8"] / sizes["float32"]},
    }


# -- many modules at once (latency tables) ------------------------------------------------------------------------
class _Bundle(nn.Module):
    """Several independent modules as one graph: one input and one output each."""

    def __init__(self, modules: list[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(_plain(m) for m in modules)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(m(x) for m, x in zip(self.parts, xs))


def _plain(module: nn.Module) -> nn.Module:
    """A copy holding ordinary, contiguous tensors. Modules built under ``torch.inference_mode`` (as a profile
    builds them) hold inference tensors, and deployed ones channels-last weights; the exporter traced both about
    twice as slowly. The ONNX graph is the same."""
    with torch.inference_mode(False):
        plain = copy.deepcopy(module)
        plain.load_state_dict({k: v.clone(memory_format=torch.contiguous_format)
                               for k, v in module.state_dict().items()}, assign=True)
    return plain.eval()


def ort_models(modules: list[nn.Module], shapes: list[tuple[int, ...]], threads: int, int8: bool = True,
               settings: QuantSettings | None = None, chunk: int = 64) -> list[OrtModel]:
    """Each module (eval mode, in deployed form) as an onnxruntime model at batch 1, quantized like ``ofa deploy
    --int8`` quantizes (calibrated on random inputs: a kernel's speed does not depend on its scales) or float.

    ``chunk`` modules are exported, pre-processed and quantized as one graph; each one's subgraph (its input to
    its output) is then cut out into a session of its own."""
    import onnx

    out: list[OrtModel] = []
    with tempfile.TemporaryDirectory() as work:
        for start in range(0, len(modules), chunk):
            part, part_shapes = modules[start:start + chunk], shapes[start:start + chunk]
            xs = tuple(torch.randn(1, *s) for s in part_shapes)
            inputs, outputs = [f"input{i}" for i in range(len(xs))], [f"output{i}" for i in range(len(xs))]
            path = Path(work) / f"bundle{start}.onnx"
            with _quiet(), torch.inference_mode(False):
                xs = tuple(x.clone() for x in xs)
                torch.onnx.export(_Bundle(part).eval(), xs, str(path), opset_version=ONNX_OPSET, dynamo=True,
                                  external_data=False, input_names=inputs, output_names=outputs)
            if int8:
                quantized = path.with_suffix(".int8.onnx")
                quantize_onnx(path, quantized, [dict(zip(inputs, (x.numpy() for x in xs)))], settings)
                path = quantized
            extractor = onnx.utils.Extractor(onnx.load(str(path)))
            for i, o, shape in zip(inputs, outputs, part_shapes):
                sub = extractor.extract_model([i], [o])
                out.append(OrtModel(session(sub.SerializeToString(), threads), _identity(i, shape, threads)))
    return out


def _identity(name: str, shape: tuple[int, ...], threads: int) -> OrtModel:
    """A session whose graph only passes its batch-1 input through: the runtime's own cost of one call."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, *shape])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, *shape])
    graph = helper.make_graph([helper.make_node("Identity", [name], ["output"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    return OrtModel(session(model.SerializeToString(), threads))


def ort_converter(int8: bool, settings: QuantSettings | None = None
                  ) -> Callable[[list[nn.Module], list[tuple[int, ...]]], list[OrtModel]]:
    """What ``deploy.profile`` applies to the modules it times, so that a table times the int8 onnxruntime form
    (at the thread count the profile runs with)."""
    return lambda modules, shapes: ort_models(modules, shapes, torch.get_num_threads(), int8, settings)
