"""MobileNetV3 / EfficientNet supernets: extraction, costs, sorting, calibration, save/load, elastic kernel."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import ofa
from ofa.families.mbv3 import OFAMobileNet
from ofa.kernel import DynamicKernelConv2d
from ofa.static import conv_bn_pairs
from tests.conftest import randomize_bn


def mini_effnet(**overrides) -> OFAMobileNet:
    """EfficientNet style at CPU-test size, with everything elastic: stem, widths, SE on the block input."""
    config = dict(style="efficientnet", stem_channels=16, first_channels=8, stage_channels=[16, 24, 32],
                  depths=[[1, 2], [1, 2, 3], [1, 2]], strides=[2, 2, 1], kernel_sizes=[[3], [3, 5], [3, 5, 7]],
                  expand_ratios=[3, 4, 6], acts=["silu", "silu", "silu"], se=[True, False, True],
                  head_channels=48, num_features=48, resolutions=[24, 32], stem_act="silu", first_act="silu",
                  first_se=True, head_act="silu", width_mults=[0.5, 0.75, 1.0], stem_mults=[0.5, 1.0],
                  in_chans=3, num_classes=7, divisor=4)
    config.update(overrides)
    return OFAMobileNet(**config)


def mini_mbv3(**overrides) -> OFAMobileNet:
    """MobileNetV3 style at CPU-test size (the ofa_mbv3_tiny structure, smaller), residual first block tied to
    the stem, elastic stem and widths."""
    config = dict(style="mobilenetv3", stem_channels=8, first_channels=8, stage_channels=[16, 24, 32],
                  depths=[[1, 2, 3], [1, 2], [1, 2, 3]], strides=[2, 2, 1], kernel_sizes=[3, 5, 7],
                  expand_ratios=[3, 4, 6], acts=["relu", "hswish", "hswish"], se=[False, True, True],
                  head_channels=64, num_features=96, resolutions=[24, 32], width_mults=[0.5, 1.0],
                  stem_mults=[0.5, 1.0], in_chans=1, num_classes=10, divisor=4)
    config.update(overrides)
    return OFAMobileNet(**config)


def randomize(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN statistics, SE weights and kernel transformations, so that equality checks can fail."""
    randomize_bn(net, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".se." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif ".transforms." in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return net


BUILDERS = {"mini_mbv3": mini_mbv3, "mini_effnet": mini_effnet}


@pytest.fixture(params=sorted(BUILDERS))
def net(request):
    return randomize(BUILDERS[request.param](), seed=1).eval()


def test_extracted_network_equals_the_active_supernet_in_eval_and_train_mode(net):
    worst = {"eval": 0.0, "train": 0.0}
    archs = [net.space.largest(), net.space.smallest()] + [net.space.sample(100 + i) for i in range(30)]
    for arch in archs:
        net.eval()
        static = net.extract(arch)
        net.set_active(arch)
        x = torch.randn(2, net.in_chans, arch.resolution, arch.resolution)
        for mode in ("eval", "train"):
            net.train(mode == "train")
            static.train(mode == "train")
            with torch.no_grad():
                y = net(x)
                worst[mode] = max(worst[mode], (y - static(x)).abs().max().item())
        assert y.abs().max() > 1e-3  # the comparison is not between two zeros
    assert worst["eval"] <= 1e-5 and worst["train"] <= 1e-5, worst


def test_registered_tiny_supernet_extracts_exactly_and_costs_match():
    net = randomize(ofa.create_supernet("ofa_mbv3_tiny"), seed=3).eval()
    assert (net.in_chans, net.num_classes) == (1, 10)
    for arch in [net.space.largest(), net.space.smallest()] + [net.space.sample(i) for i in range(4)]:
        static = net.extract(arch)
        x = torch.randn(2, 1, arch.resolution, arch.resolution)
        with torch.no_grad(), net.active(arch):
            for mode in (False, True):
                net.train(mode)
                static.train(mode)
                with FlopCounterMode(display=False) as counter:
                    y = static(x)
                assert (net(x) - y).abs().max().item() <= 1e-5
        net.eval()
        assert ofa.count_macs(net, arch) == counter.get_total_flops() // 4  # batch of 2
        assert ofa.count_params(net, arch) == sum(p.numel() for p in static.parameters())


def test_extracted_network_has_plain_layers_and_folded_kernels(net):
    arch = net.space.smallest()
    static = net.extract(arch)
    assert not any(isinstance(m, DynamicKernelConv2d) or "Dynamic" in type(m).__name__ for m in static.modules())
    assert not any("transforms" in k for k in static.state_dict())
    block = static.blocks[1][0]
    assert block.conv_dw.kernel_size == (arch.kernels[0][0],) * 2
    assert static.description["arch"] == arch.to_dict()


def test_conv_bn_pairs_name_every_batchnorm_once(net):
    static = net.extract(net.space.sample(5))
    modules = dict(static.named_modules())
    pairs = conv_bn_pairs(static)
    assert all(isinstance(modules[c], torch.nn.Conv2d) and isinstance(modules[b], torch.nn.BatchNorm2d)
               and modules[c].out_channels == modules[b].num_features for c, b in pairs)
    assert sorted(b for _, b in pairs) == sorted(n for n, m in modules.items() if isinstance(m, torch.nn.BatchNorm2d))


def test_analytic_costs_equal_the_flop_counter_and_parameter_count(net):
    for arch in [net.space.largest(), net.space.smallest()] + [net.space.sample(i) for i in range(8)]:
        static = net.extract(arch).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            static(torch.randn(1, net.in_chans, arch.resolution, arch.resolution))
        assert ofa.count_macs(net, arch) == counter.get_total_flops() // 2
        assert ofa.count_params(net, arch) == sum(p.numel() for p in static.parameters())
        assert static.description["macs"] == ofa.count_macs(net, arch)


@pytest.mark.parametrize("criterion", ["l1", "bn", "taylor", "fpgm"])
def test_sorting_leaves_the_largest_network_unchanged(net, criterion):
    net.double()
    # the largest network (all channels, blocks and kernels) at the smallest resolution, to keep the test fast
    largest = dataclasses.replace(net.space.largest(), resolution=min(net.space.resolutions))
    net.set_active(largest)
    r = largest.resolution
    x = torch.randn(3, net.in_chans, r, r, dtype=torch.float64)
    big = max(net.space.resolutions)  # taylor scores are taken on the largest arch at its own resolution
    batches = [(torch.randn(2, net.in_chans, big, big, dtype=torch.float64),
                torch.randint(0, net.num_classes, (2,)))]
    before = {k: v.clone() for k, v in net.state_dict().items()}

    def outputs():
        saved = {k: v.clone() for k, v in net.state_dict().items()}
        with torch.no_grad():
            y_eval, y_train = net.eval()(x), net.train()(x)
        net.load_state_dict(saved)
        net.eval()
        return y_eval, y_train

    ref_eval, ref_train = outputs()
    perms = ofa.sort_channels(net, criterion, batches=batches)
    assert any(p != sorted(p) for p in perms.values())
    got_eval, got_train = outputs()
    assert (got_eval - ref_eval).abs().max().item() <= 1e-9
    assert (got_train - ref_train).abs().max().item() <= 1e-9
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    # the SE layers and the depthwise channels move with their block
    assert any(k.endswith("se.conv_reduce.weight") for k in changed)
    assert any(k.endswith("se.conv_expand.bias") for k in changed)
    assert any(k.endswith("conv_dw.weight") for k in changed)


def test_sorting_puts_important_middle_channels_first(net):
    ofa.sort_channels(net, "l1")
    for group, score in ofa.channel_importance(net, "l1"):
        assert torch.all(score[:-1] >= score[1:] - 1e-6), group.name


def test_channel_groups_tie_the_first_block_to_the_stem_only_when_it_is_residual():
    names = [g.name for g in mini_mbv3().channel_groups()]
    assert "stem+first" in names and "first" not in names
    effnet = mini_effnet()
    names = [g.name for g in effnet.channel_groups()]
    assert "stem" in names and "first" in names
    last = [g for g in effnet.channel_groups() if g.name == "stage2"][0]
    assert effnet.conv_head in last.consumers and len(last.producers) == 2


def test_bn_calibration_gives_the_extracted_network_the_subnet_statistics(net):
    arch = net.space.sample(3)
    batches = [torch.randn(8, net.in_chans, arch.resolution, arch.resolution) * 2 + 1 for _ in range(3)]
    stored = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, net.in_chans, arch.resolution, arch.resolution)
    with net.active(arch):
        with ofa.calibrate_bn(net, batches), torch.no_grad():
            calibrated = net(x)
        static = net.extract(arch, calib_batches=batches).eval()
    assert all(torch.equal(v, stored[k]) for k, v in net.state_dict().items())  # restored
    with torch.no_grad():
        assert (static(x) - calibrated).abs().max().item() <= 1e-4
        assert not torch.allclose(static(x), net.extract(arch).eval()(x), atol=1e-3)


def test_save_and_load_round_trip(net, tmp_path):
    arch = net.space.sample(11)
    x = torch.randn(2, net.in_chans, arch.resolution, arch.resolution)
    ofa.save(net, tmp_path / "supernet.safetensors")
    loaded = ofa.load(tmp_path / "supernet.safetensors")
    assert loaded.space == net.space and loaded.config == net.config
    static = net.extract(arch).eval()
    ofa.save(static, tmp_path / "model")
    static_loaded = ofa.load(tmp_path / "model")
    with torch.no_grad(), net.active(arch), loaded.active(arch):
        assert torch.equal(loaded(x), net(x))
        assert torch.equal(static_loaded(x), static(x))


def test_elastic_kernel_is_the_transformed_centre_and_trains_its_transforms():
    conv = DynamicKernelConv2d(4, (3, 5, 7), stride=1)
    w = conv.weight.detach()
    # identity-initialised: a smaller kernel is the centre crop
    assert torch.equal(conv.kernel_weight(5), w[:, :, 1:6, 1:6])
    assert torch.equal(conv.kernel_weight(3), w[:, :, 2:5, 2:5])
    with torch.no_grad():
        conv.transforms["5"].copy_(torch.randn(25, 25))
    expected5 = (w[:, :, 1:6, 1:6].reshape(4, 25) @ conv.transforms["5"]).reshape(4, 1, 5, 5)
    assert torch.allclose(conv.kernel_weight(5), expected5)
    expected3 = (expected5[:, :, 1:4, 1:4].reshape(4, 9) @ conv.transforms["3"]).reshape(4, 1, 3, 3)
    assert torch.allclose(conv.kernel_weight(3), expected3)
    conv.active_kernel = 3
    conv(torch.randn(1, 3, 6, 6)).sum().backward()
    assert conv.transforms["3"].grad is not None and conv.transforms["3"].grad.abs().sum() > 0
    assert conv.transforms["5"].grad is not None and conv.weight.grad[3].abs().sum() == 0  # 3 channels used


def test_arch_kernels_are_validated(net):
    d = net.space.largest().to_dict()
    d["kernels"][0][0] = 9
    with pytest.raises(ofa.ArchError, match=r"kernels\[0\]\[0\]=9 is not allowed"):
        net.space.arch_from_dict(d)
    resized = dataclasses.replace(net.space.largest(), resolution=min(net.space.resolutions))
    with pytest.raises(ofa.OFAError, match="resolution"):
        with net.active(resized):
            net(torch.randn(1, net.in_chans, 40, 40))


def test_registered_spaces_and_bad_arguments():
    assert {"ofa_mbv3", "ofa_mbv3_tiny"} <= set(ofa.list_supernets())
    plan = OFAMobileNet.make_plan(**ofa.registry.supernet_entry("ofa_mbv3")[1])
    space = plan.space
    assert space.resolutions == (128, 160, 192, 224)
    assert space.depths == ((2, 3, 4),) * 5 and space.kernels == ((3, 5, 7),) * 5
    assert space.expands == ((3.0, 4.0, 6.0),) * 5
    assert plan.stage_channels == (24, 40, 80, 112, 160)
    assert (plan.head_channels, plan.num_features) == (960, 1280)
    with pytest.raises(ofa.OFAError, match="unknown MBConv style"):
        mini_effnet(style="resnet")
    with pytest.raises(ofa.OFAError, match="odd kernel sizes"):
        mini_effnet(kernel_sizes=[4, 6])
    with pytest.raises(ofa.OFAError, match="must start with a stride or channel change"):
        mini_effnet(stage_channels=[8, 24, 32], strides=[1, 2, 1])


def test_ofa_mbv3_largest_extracts_exactly_and_matches_the_flop_counter():
    net = randomize(ofa.create_supernet("ofa_mbv3", num_classes=10), seed=2).eval()
    arch = dataclasses.replace(net.space.largest(), resolution=128)
    static = net.extract(arch).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad(), net.active(arch):
        with FlopCounterMode(display=False) as counter:
            y = static(x)
        assert (net(x) - y).abs().max().item() <= 1e-5
    assert ofa.count_macs(net, arch) == counter.get_total_flops() // 2
    assert ofa.count_params(net, arch) == sum(p.numel() for p in static.parameters())
