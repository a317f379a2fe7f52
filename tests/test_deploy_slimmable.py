"""deploy.SlimmableNet: equality with each extracted dense subnet, constant-time switching without copies or
memory growth, fast mode within a memory limit on long chains, the latency controller, save/load and clear
errors."""

from __future__ import annotations

import copy
import tracemalloc

import pytest
import torch
from conftest import randomize_bn

import ofa
from deploy.slim_layers import SLIM_LAYERS, SlimBatchNorm2d, SlimConv2d
from deploy.slimmable import LatencyController, SlimmableNet
from ofa import OFAError
from ofa.fold import prepare_for_inference

RESNET_CHAIN = [
    {"resolution": 16, "stem": 0.8, "depths": [1, 1, 1], "widths": [0.8, 0.65, 0.65], "expands": [[0.5], [0.35], [0.35]]},
    {"resolution": 24, "stem": 0.8, "depths": [1, 2, 1], "widths": [0.8, 0.8, 0.8], "expands": [[0.75], [0.5, 0.5], [0.75]]},
    {"resolution": 24, "stem": 1.0, "depths": [2, 2, 2], "widths": [1.0, 1.0, 1.0],
     "expands": [[1.0, 0.5], [0.5, 1.0], [1.0, 1.0]]},
]


def assert_folded_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding: BN folding and channels-last reorder the sums, and how much that moves an
    output depends on the CPU's kernels and the weights. The bound is relative to the outputs' scale, not to each
    logit: on random MobileNets a logit near 0 moved by 3e-5 of the largest (6 seeds x 120 inputs), which an
    element-wise rtol failed about once in three runs; a real mismatch is orders of magnitude larger."""
    assert actual.shape == expected.shape
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    assert diff <= 1e-4 * scale + 1e-5, f"max |diff| {diff:.3g} against outputs up to {scale:.3g}"


def _mbv3(resolution, depths, expand, kernels):
    return {"resolution": resolution, "depths": depths, "widths": [1.0] * 5,
            "expands": [[expand] * d for d in depths], "kernels": [[k] * d for k, d in zip(kernels, depths)]}


# Nested MobileNet widths: kernels kept per block, squeeze-excite widths grow with the middle channels.
MBV3_CHAIN = [_mbv3(24, [2, 2, 2, 2, 2], 3.0, [3, 5, 7, 3, 5]), _mbv3(28, [3, 2, 3, 2, 3], 4.0, [3, 5, 7, 3, 5]),
              _mbv3(32, [4, 4, 4, 4, 4], 6.0, [3, 5, 7, 3, 5])]
CHAINS = {"ofa_resnet_tiny": RESNET_CHAIN, "ofa_mbv3_tiny": MBV3_CHAIN}


def _resnet(resolution, stem, depths, widths, expands):
    return {"resolution": resolution, "stem": stem, "depths": depths, "widths": widths, "expands": expands}


# Seven nested widths each: every width's own copy would hold 4-5x the largest dense network.
LONG_CHAINS = {
    "ofa_resnet_tiny": [
        _resnet(16, 0.8, [1, 1, 1], [0.8, 0.65, 0.65], [[0.5], [0.35], [0.35]]),
        _resnet(16, 0.8, [1, 1, 1], [0.8, 0.8, 0.8], [[0.75], [0.5], [0.5]]),
        _resnet(20, 0.8, [1, 2, 1], [0.8, 0.8, 0.8], [[0.75], [0.5, 0.35], [0.5]]),
        _resnet(24, 0.8, [2, 2, 1], [0.8, 0.8, 0.8], [[0.75, 0.5], [0.75, 0.5], [0.75]]),
        _resnet(24, 1.0, [2, 2, 2], [1.0, 1.0, 0.8], [[1.0, 0.5], [0.75, 0.75], [0.75, 0.5]]),
        _resnet(28, 1.0, [2, 2, 2], [1.0, 1.0, 1.0], [[1.0, 0.75], [1.0, 0.75], [1.0, 0.75]]),
        _resnet(32, 1.0, [2, 2, 2], [1.0, 1.0, 1.0], [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])],
    "ofa_mbv3_tiny": [_mbv3(24, [2, 2, 2, 2, 2], 3.0, [3, 5, 7, 3, 5]), _mbv3(24, [2, 2, 2, 2, 2], 4.0, [3, 5, 7, 3, 5]),
                      _mbv3(28, [2, 3, 3, 2, 2], 4.0, [3, 5, 7, 3, 5]), _mbv3(28, [3, 3, 3, 3, 3], 4.0, [3, 5, 7, 3, 5]),
                      _mbv3(28, [3, 3, 3, 3, 3], 6.0, [3, 5, 7, 3, 5]), _mbv3(32, [4, 4, 4, 3, 3], 6.0, [3, 5, 7, 3, 5]),
                      _mbv3(32, [4, 4, 4, 4, 4], 6.0, [3, 5, 7, 3, 5])],
}


def calib(arch):
    g = torch.Generator().manual_seed(arch.resolution)
    return [torch.randn(16, 1, arch.resolution, arch.resolution, generator=g) for _ in range(2)]


@pytest.fixture(scope="module", params=sorted(CHAINS))
def built(request):
    net = randomize_bn(ofa.create_supernet(request.param)).eval()
    archs = [net.space.arch_from_dict(a) for a in CHAINS[request.param]]
    dense = [net.extract(a, calib_batches=calib(a)).eval() for a in archs]
    # no memory limit: every width's copy beside the stored weights, which saving and moving need
    return SlimmableNet.from_dense(dense, ["small", "mid", "large"], memory_limit=None), dense


@pytest.mark.parametrize("mode", ["fast", "lean"])
def test_equals_each_extracted_dense_subnet(built, mode):
    slim, dense = built
    slim.set_mode(mode)
    for i, d in enumerate(dense):
        assert slim.set_width(i) == i
        x = torch.randn(4, 1, d.resolution, d.resolution)
        with torch.no_grad():
            assert_folded_close(slim(x), d(x))
            assert_folded_close(slim(x), prepare_for_inference(d)(x))
            assert_folded_close(slim.extract(i)(x), d(x))
    slim.set_width("mid")
    assert slim.width == 1 and slim.resolution == dense[1].resolution
    slim.set_mode("fast")


def test_fast_mode_derives_deployed_form_weights_once(built):
    slim, dense = built
    slim.set_width("large")
    x = torch.randn(2, 1, slim.resolution, slim.resolution)
    with torch.inference_mode():
        slim(x)
    memory = slim.memory_bytes()
    largest = sum(t.numel() * t.element_size() for t in dense[-1].state_dict().values())
    # the derived copies hold each width's weights once: more than the largest alone, less than all at its size
    assert largest < memory["derived"] < len(dense) * largest and memory["stored"] >= largest
    convs = [m for m in slim.modules() if isinstance(m, SlimConv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for m in convs for w, _, _ in filter(None, m.fast))
    bns = [m for m in slim.modules() if isinstance(m, SlimBatchNorm2d)]
    assert all(folded or shape is None for m in bns for folded, shape in zip(m.fast, m.shapes))  # every BN used
    slim.double()  # moved tensors: derived again, in the new dtype, outside inference mode too
    with torch.no_grad():
        assert (slim(x.double()) - dense[-1].double()(x.double())).abs().max() <= 1e-9
    slim.float()
    dense[-1].float()
    slim.set_mode("lean")
    with torch.no_grad():
        slim(x)
    assert slim.memory_bytes()["derived"] == 0
    slim.set_mode("fast")
    with pytest.raises(OFAError, match=r"unknown SlimmableNet mode 'turbo'; allowed: \['fast', 'lean'\]"):
        slim.set_mode("turbo")


def test_switching_is_constant_time_without_copies_or_memory_growth(built):
    slim, _ = built
    slim.set_width(2)
    x = torch.randn(1, 1, slim.resolution, slim.resolution)
    with torch.no_grad():
        slim(x)  # prepares the views once
    pointers = [p.data_ptr() for p in slim.parameters()]
    tracemalloc.start()
    slim.set_width(0)
    before = tracemalloc.get_traced_memory()[0]
    for k in range(10_000):  # the switch time itself is measured by benchmarks/deploy.py, not asserted here
        slim.set_width(("small", 1, "large")[k % 3])
    growth = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert growth < 1024
    assert [p.data_ptr() for p in slim.parameters()] == pointers
    prepared = [(id(m._views), id(m.fast)) for m in slim.modules() if isinstance(m, SLIM_LAYERS)]
    slim.set_width("large")
    with torch.no_grad():
        slim(x)
    assert [(id(m._views), id(m.fast)) for m in slim.modules() if isinstance(m, SLIM_LAYERS)] == prepared


def test_stores_largest_weights_once(built):
    slim, dense = built
    weights = sum(p.numel() for p in slim.parameters())
    assert weights == sum(p.numel() for p in dense[-1].parameters())


def test_controller_picks_widest_width_within_target(built):
    slim, _ = built
    controller = LatencyController(slim, latency_ms=[1.0, 2.0, 4.0])
    assert controller.pick(3.0) == 1 and controller.pick(10.0) == 2 and controller.pick(0.5) == 0
    y = controller(torch.randn(2, 1, 40, 40), target_ms=1.5)  # resized to the chosen width's resolution
    assert controller.last == 0 and y.shape == (2, 10)
    measured = slim.measure_widths(repeats=3)
    assert len(measured) == 3 and all(ms > 0 for ms in measured)
    assert LatencyController(slim).latency_ms == measured  # defaults to the widths' measured latencies


def test_save_load_round_trip_and_corrupt_file(built, tmp_path):
    slim, dense = built
    path = slim.save(tmp_path / "slim")
    loaded = SlimmableNet.load(path)
    loaded.set_width("small")
    x = torch.randn(2, 1, dense[0].resolution, dense[0].resolution)
    with torch.no_grad():
        assert_folded_close(loaded(x), dense[0](x))
    path.write_bytes(path.read_bytes()[:64])
    with pytest.raises(ofa.WeightsError, match="truncated or corrupt"):
        SlimmableNet.load(path)


def test_errors(built):
    slim, dense = built
    with pytest.raises(ofa.OFAError, match="unknown width 'huge'"):
        slim.set_width("huge")
    with pytest.raises(ofa.OFAError, match="runs at"):
        slim.set_width(2)
        slim(torch.randn(1, 1, 16, 16))
    with pytest.raises(ofa.OFAError, match="not contained|not in the next width"):
        SlimmableNet.from_dense([dense[2], dense[0]])


def test_kernel_sizes_must_match_across_widths():
    net = ofa.create_supernet("ofa_mbv3_tiny").eval()
    small, large = MBV3_CHAIN[0], dict(MBV3_CHAIN[1], kernels=[[7] * d for d in MBV3_CHAIN[1]["depths"]])
    with pytest.raises(ofa.OFAError, match=r"conv_dw.weight has shape \[\d+, 1, 3, 3\], not contained"):
        SlimmableNet([net.static_description(net.space.arch_from_dict(a)) for a in (small, large)])


def test_drop_stored_runs_inference_in_less_memory(built):
    slim, dense = built
    slim = copy.deepcopy(slim)
    largest = sum(t.numel() * t.element_size() for t in dense[-1].state_dict().values())
    slim.drop_stored()
    assert slim.memory_bytes()["total"] < 2 * largest  # the per-width weights, BN statistics folded away
    for i, d in enumerate(dense):
        slim.set_width(i)
        x = torch.randn(2, 1, d.resolution, d.resolution)
        with torch.inference_mode():
            assert_folded_close(slim(x), d(x))
    for action in (lambda: slim.save("x"), lambda: slim.extract(0), lambda: slim.set_mode("lean"),
                   lambda: slim.double()):
        with pytest.raises(OFAError, match=r"folded its stored weights .*\(drop_stored\(\)\) .* load it again"):
            action()


@pytest.fixture(scope="module", params=sorted(LONG_CHAINS))
def long_chain(request):
    net = randomize_bn(ofa.create_supernet(request.param)).eval()
    archs = [net.space.arch_from_dict(a) for a in LONG_CHAINS[request.param]]
    return [net.extract(a, calib_batches=calib(a)).eval() for a in archs]


def test_fast_mode_within_memory_limit_on_a_long_chain(long_chain, tmp_path):
    dense = long_chain
    largest = sum(t.numel() * t.element_size() for t in dense[-1].state_dict().values())
    path = SlimmableNet.from_dense(dense).save(tmp_path / "slim")  # saved before any forward: stored weights intact
    slim = SlimmableNet.load(path)  # memory_limit=2.0 by default
    memory = slim.memory_bytes()
    assert memory["largest_dense"] == largest and memory["total"] <= 2.0 * largest  # derived at this call
    derived = slim.derived_widths
    # the largest runs on the stored weights, folded; smaller widths get copies, smallest first, while they fit
    assert derived[-1] == 6 and derived[:-1] == list(range(len(derived) - 1)) and 3 <= len(derived) < 7
    for i, d in enumerate(dense):  # derived or on views, every width computes its dense network's outputs
        slim.set_width(i)
        x = torch.randn(2, 1, d.resolution, d.resolution)
        with torch.inference_mode():
            assert_folded_close(slim(x), d(x))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for k in range(10_000):
        slim.set_width(k % 7)
    assert tracemalloc.get_traced_memory()[0] - before < 1024
    tracemalloc.stop()
    with pytest.raises(OFAError, match=r"\(memory_limit=2.0\) and runs inference only; load it again .* to save"):
        slim.save(tmp_path / "again")
    unlimited = SlimmableNet.load(path, memory_limit=None)
    assert unlimited.derived_widths == list(range(7)) and unlimited.memory_bytes()["total"] > 4 * largest
    tight = SlimmableNet.load(path, memory_limit=1)
    assert tight.derived_widths == [6]  # the folded stored weights are held whatever the limit


@pytest.mark.parametrize("limit", [0.5, "2", True, float("nan"), float("inf")])
def test_bad_memory_limit_is_one_clear_error(built, limit):
    with pytest.raises(OFAError, match=r"^memory_limit must be None \(no limit\) or a number >= 1 \(times the "
                                        r"largest dense network's memory\), got"):
        SlimmableNet(built[0].descriptions, memory_limit=limit)
