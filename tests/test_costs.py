import dataclasses

import torch
from torch.utils.flop_counter import FlopCounterMode

import ofa


def _flop_counter_macs(model, x):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


def test_macs_and_params_agree_with_the_flop_counter(supernet):
    for i in range(12):
        arch = supernet.space.sample(200 + i)
        static = supernet.extract(arch).eval()
        x = torch.randn(1, supernet.in_chans, arch.resolution, arch.resolution)
        assert ofa.count_macs(supernet, arch) == _flop_counter_macs(static, x)
        assert ofa.count_params(supernet, arch) == sum(p.numel() for p in static.parameters())


def test_resnet18_largest_costs_equal_timm_resnet18():
    import timm

    net = ofa.create_supernet("ofa_resnet18")
    largest = net.space.largest()
    model = timm.create_model("resnet18", pretrained=False)
    assert ofa.count_params(net, largest) == sum(p.numel() for p in model.parameters()) == 11_689_512
    assert ofa.count_macs(net, largest) == _flop_counter_macs(model.eval(), torch.randn(1, 3, 224, 224))


def test_resnet50_costs_match_the_flop_counter_on_the_extracted_model():
    net = ofa.create_supernet("ofa_resnet50", num_classes=10)
    for arch in (net.space.smallest(), dataclasses.replace(net.space.sample(1), resolution=128)):
        static = net.extract(arch).eval()
        x = torch.randn(1, 3, arch.resolution, arch.resolution)
        assert ofa.count_macs(net, arch) == _flop_counter_macs(static, x)
        assert ofa.count_params(net, arch) == sum(p.numel() for p in static.parameters())


def test_costs_are_monotone_from_smallest_to_largest(supernet):
    small, large = supernet.space.smallest(), supernet.space.largest()
    for i in range(20):
        macs = ofa.count_macs(supernet, supernet.space.sample(i))
        assert ofa.count_macs(supernet, small) <= macs <= ofa.count_macs(supernet, large)

