import dataclasses
from copy import deepcopy

import pytest
import torch
from torch import nn

import ofa
from ofa.fold import prepare_for_inference
from tests.conftest import randomize_bn


def _plain_layers_only(model: nn.Module) -> bool:
    allowed = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.Identity, nn.Sequential)
    leaves = [m for m in model.modules() if not list(m.children())]
    return all(type(m) in allowed for m in leaves)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_extracted_network_equals_the_active_supernet(supernet, mode):
    worst = 0.0
    for i in range(30):
        arch = supernet.space.sample(100 + i)
        supernet.set_active(arch)
        static = supernet.extract()
        assert _plain_layers_only(static)
        assert static.description["arch"] == arch.to_dict()
        supernet.train(mode == "train")
        static.train(mode == "train")
        x = torch.randn(3, supernet.in_chans, arch.resolution, arch.resolution)
        with torch.no_grad():
            worst = max(worst, (supernet(x) - static(x)).abs().max().item())
        supernet.eval()
    assert worst <= 1e-5


def test_largest_and_smallest_extract_exactly(supernet):
    for arch in (supernet.space.largest(), supernet.space.smallest()):
        with supernet.active(arch):
            static = supernet.extract().eval()
            x = torch.randn(2, supernet.in_chans, arch.resolution, arch.resolution)
            with torch.no_grad():
                assert torch.allclose(supernet(x), static(x), atol=1e-5)


def test_extracted_network_is_smaller_and_has_the_arch_channels(tiny):
    small = tiny.space.smallest()
    static = tiny.extract(small)
    assert sum(p.numel() for p in static.parameters()) < sum(p.numel() for p in tiny.parameters()) / 5
    spec = tiny.plan.static_spec(small)
    assert static.conv1.out_channels == spec["stem"]
    assert static.fc.in_features == spec["stages"][-1][-1][2]
    assert static.description["data_config"]["input_size"] == [1, small.resolution, small.resolution]


def test_active_context_restores_the_previous_arch(tiny):
    before = tiny.active_arch
    arch = tiny.space.sample(5)
    with tiny.active(arch):
        assert tiny.active_arch == arch
    assert tiny.active_arch == before
    with pytest.raises(ofa.ArchError), tiny.active({"resolution": 99}):
        pass
    assert tiny.active_arch == before


def test_input_at_another_resolution_is_a_clear_error(tiny):
    arch = dataclasses.replace(tiny.space.largest(), resolution=24)
    tiny.set_active(arch)
    with pytest.raises(ofa.OFAError, match="input is 32x32 but the active arch runs at resolution 24"):
        tiny(torch.randn(1, 1, 32, 32))
    with pytest.raises(ofa.OFAError, match=r"expected an input of shape \(N, 1, 24, 24\)"):
        tiny(torch.randn(1, 3, 24, 24))
    # the deployed (dense, BN-folded) network refuses it too, instead of answering worse
    dense = prepare_for_inference(tiny.extract(arch))
    dense(torch.randn(2, 1, 24, 24))
    for shape in ((1, 1, 32, 32), (1, 3, 24, 24), (1, 24, 24)):
        with pytest.raises(ofa.OFAError, match=r"takes inputs of shape \(N, 1, 24, 24\)"):
            dense(torch.randn(*shape))


def test_extract_with_calibration_owns_its_statistics(tiny):
    arch = tiny.space.sample(7)
    batches = [torch.randn(16, 1, arch.resolution, arch.resolution) * 2 + 1 for _ in range(3)]
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    static = tiny.extract(arch, calib_batches=batches)
    plain = tiny.extract(arch)
    assert not torch.allclose(static.bn1.running_mean, plain.bn1.running_mean)
    for k, v in tiny.state_dict().items():  # the supernet's statistics are untouched
        assert torch.equal(v, before[k]), k


def test_resnet18_extraction_at_a_few_archs():
    net = randomize_bn(ofa.create_supernet("ofa_resnet18", num_classes=5)).eval()
    for i in range(3):
        arch = dataclasses.replace(net.space.sample(i), resolution=128)
        with net.active(arch):
            static = net.extract()
            x = torch.randn(1, 3, 128, 128)
            with torch.no_grad():
                assert (net(x) - static(x)).abs().max().item() <= 1e-5


def test_cached_weight_slices_follow_in_place_weight_updates(tiny):
    arch = tiny.space.smallest()
    x = torch.randn(2, 1, arch.resolution, arch.resolution)
    with tiny.active(arch), torch.no_grad():
        tiny(x)  # fills the evaluation cache of sliced weights
        for m in tiny.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(1.5)  # an optimizer step or a sort changes weights in place
        assert torch.allclose(tiny(x), tiny.extract().eval()(x), atol=1e-5)
        tiny.load_state_dict(randomize_bn(ofa.create_supernet("ofa_resnet_tiny")).state_dict())
        assert torch.allclose(tiny(x), tiny.extract().eval()(x), atol=1e-5)


@pytest.mark.parametrize("name", ["ofa_resnet_tiny", "ofa_mbv3_tiny"])
def test_a_supernet_evaluated_then_updated_in_place_can_be_deep_copied(name):
    # The trainer copies the supernet (teacher, weight EMA) after evaluating subnets and taking optimizer steps.
    net = ofa.create_supernet(name)
    arch = dataclasses.replace(net.space.smallest(), resolution=max(net.space.resolutions))
    x = torch.randn(2, net.in_chans, arch.resolution, arch.resolution)
    with net.active(arch), torch.no_grad():
        net.eval()(x)  # fills the evaluation caches of sliced weights and kernels
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()(x).sum().backward()
    optimizer.step()
    copy = deepcopy(net)
    for a, b in zip(net.state_dict().values(), copy.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_cached_kernel_transforms_follow_in_place_updates():
    net = randomize_bn(ofa.create_supernet("ofa_mbv3_tiny")).eval()
    arch = net.space.sample(5)
    x = torch.randn(2, net.in_chans, arch.resolution, arch.resolution)
    with net.active(arch), torch.no_grad():
        before = net(x)  # fills the evaluation cache of transformed kernels
        for m in net.modules():
            if hasattr(m, "transforms"):
                for t in m.transforms.values():
                    t.mul_(1.1)
        after = net(x)
        assert not torch.allclose(before, after)
        assert torch.allclose(after, net.extract().eval()(x), atol=1e-5)
