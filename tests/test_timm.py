import dataclasses

import pytest
import safetensors.torch
import timm
import torch

import ofa
from tests.conftest import randomize_bn


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_largest_arch_computes_exactly_what_the_timm_model_computes(name):
    model = randomize_bn(timm.create_model(name, pretrained=False, num_classes=10, zero_init_last=False), seed=3)
    net = ofa.from_timm(model).eval()
    model.eval()
    assert net.active_arch == net.space.largest()
    net.set_active(dataclasses.replace(net.space.largest(), resolution=128))
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert (net(x) - model(x)).abs().max().item() <= 1e-5
    net.train()
    model.train()
    with torch.no_grad():
        assert (net(x) - model(x)).abs().max().item() <= 1e-5
    assert ofa.count_params(net, net.space.largest()) == sum(p.numel() for p in model.parameters())


def test_space_is_derived_from_the_model():
    net = ofa.from_timm("resnet50", num_classes=4)
    space = net.space
    assert space.max_depths == (3, 4, 6, 3)
    assert max(space.expands[0]) == 0.25  # a plain bottleneck's middle channels are a quarter of its output
    assert space.resolutions == (128, 160, 192, 224)
    assert net.num_classes == 4
    assert net.origin["timm_model"] == "resnet50" and net.origin["timm_version"] == timm.__version__
    assert net.data_config["interpolation"] == "bicubic"


def test_checkpoint_path_loads_local_weights_with_their_class_count(tmp_path):
    model = randomize_bn(timm.create_model("resnet18", pretrained=False, num_classes=6, zero_init_last=False))
    path = tmp_path / "r18.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(path))
    net = ofa.from_timm("resnet18", checkpoint_path=str(path)).eval()
    assert net.num_classes == 6
    net.set_active(dataclasses.replace(net.space.largest(), resolution=128))
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert (net(x) - model.eval()(x)).abs().max().item() <= 1e-5


def test_from_timm_supernet_survives_save_and_load(tmp_path):
    net = randomize_bn(ofa.from_timm("resnet18", num_classes=3)).eval()
    ofa.save(net, tmp_path / "supernet.safetensors")
    again = ofa.load(tmp_path / "supernet.safetensors")
    assert again.origin["timm_model"] == "resnet18" and again.space == net.space
    arch = dataclasses.replace(net.space.sample(0), resolution=128)
    net.set_active(arch)
    again.set_active(arch)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(net(x), again(x))


@pytest.mark.parametrize("name, why", [
    ("resnet50d", "deep stem"),
    ("seresnet50", "squeeze-excite"),
    ("resnext50_32x4d", "grouped"),
    ("resnetv2_50", "belongs to no supported network family"),
    ("no_such_model", "unknown timm model"),
])
def test_unsupported_models_are_rejected_clearly(name, why):
    with pytest.raises(ofa.OFAError, match=why) as info:
        ofa.from_timm(name)
    assert "supported:" in str(info.value)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ofa.OFAError, match="does not exist"):
        ofa.from_timm("resnet18", checkpoint_path=str(tmp_path / "missing.pth"))
