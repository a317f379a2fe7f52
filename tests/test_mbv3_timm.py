"""Supernets built from timm MobileNetV3 / EfficientNet models (random init, nothing downloaded)."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import ofa
from tests.test_mbv3 import randomize


def _random_timm(name: str, **kw) -> torch.nn.Module:
    model = timm.create_model(name, pretrained=False, **kw)
    return randomize(model, seed=4).eval()  # random BN statistics and SE weights


@pytest.mark.parametrize("name", ["mobilenetv3_large_100", "efficientnet_b0"])
def test_largest_arch_computes_what_the_timm_model_computes(name):
    model = _random_timm(name, num_classes=10)
    net = ofa.from_timm(model).eval()
    assert net.origin["timm_model"] == name and net.num_classes == 10
    # the model's own kernels are the largest choices, smaller odd kernels come with them
    assert max(net.space.kernels[1]) == 5 and min(net.space.kernels[1]) == 3
    largest = net.space.largest()
    arch = dataclasses.replace(largest, resolution=128)  # the same network at a cheaper test resolution
    x = torch.randn(2, 3, 128, 128)
    static = net.extract(arch).eval()
    with torch.no_grad(), net.active(arch):
        expected = model(x)
        assert expected.abs().max() > 1e-3
        # random BN statistics and SE weights make logits of ~100s: compare relative to their scale
        scale = expected.abs().max().item()
        assert (net(x) - expected).abs().max().item() <= 1e-5 * max(1.0, scale)
        assert (static(x) - expected).abs().max().item() <= 1e-5 * max(1.0, scale)
        with FlopCounterMode(display=False) as counter:
            static(x[:1])
    assert ofa.count_macs(net, arch) == counter.get_total_flops() // 2
    assert ofa.count_params(net, largest) == sum(p.numel() for p in model.parameters())
    # a smaller arch of the derived space (elastic widths, expand fractions, kernels) extracts exactly too
    small = net.space.sample(3)
    sub = net.extract(small).eval()
    y = torch.randn(2, 3, small.resolution, small.resolution)
    with torch.no_grad(), net.active(small):
        assert (net(y) - sub(y)).abs().max().item() <= 1e-5


def test_squeeze_excite_width_follows_the_family_rule():
    mbv3 = ofa.from_timm(timm.create_model("mobilenetv3_large_100", pretrained=False))
    effnet = ofa.from_timm(timm.create_model("efficientnet_b0", pretrained=False))
    # MobileNetV3: from the middle channels; EfficientNet: from the block input
    arch = mbv3.space.smallest()
    block = mbv3.plan.blocks(arch)[1][0]
    assert block.se == ofa.make_divisible(block.mid * 0.25, 8) and block.se < 24
    arch = effnet.space.largest()
    blocks = effnet.plan.blocks(arch)
    assert [b.se for b in blocks[0]] == [4, 6]
    assert effnet.plan.first_block(arch).se == 8  # 32 stem channels / 4


@pytest.mark.parametrize("name, why", [
    ("mobilenetv3_small_100", "first block has stride 2"),
    ("tf_efficientnet_b0", "TensorFlow"),
    ("efficientnet_b1", "single depthwise-separable block"),
])
def test_unsupported_variants_are_rejected_with_a_clear_error(name, why):
    with pytest.raises(ofa.OFAError, match=why):
        ofa.from_timm(name)


def test_checkpoint_path_loads_local_weights(tmp_path):
    import safetensors.torch

    model = _random_timm("mobilenetv3_large_100", num_classes=5)
    path = tmp_path / "mbv3.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(path))
    net = ofa.from_timm("mobilenetv3_large_100", checkpoint_path=str(path)).eval()
    assert net.num_classes == 5
    assert torch.equal(net.classifier.weight, model.classifier.weight)
    with pytest.raises(ofa.OFAError, match="does not exist"):
        ofa.from_timm("efficientnet_b0", checkpoint_path=str(tmp_path / "missing.safetensors"))
