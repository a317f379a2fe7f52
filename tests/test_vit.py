"""The vision transformer family: timm ViT/DeiT imported exactly, clear rejections, exact extraction, analytic costs
equal to FlopCounterMode, ONNX export, save/load, latency units and no BN calibration pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import ofa
from ofa.latency import distinct_units
from ofa.registry import get_family
from ofa.tokens import Tokens

CONFIGS = Path(__file__).resolve().parent.parent / "ofa" / "configs"


def _randomize_norms(net: torch.nn.Module, seed: int = 0) -> None:
    """LayerNorms and biases away from their 1/0 init, so that slicing them wrongly would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, torch.nn.Linear) and m.bias is not None:
                m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=g))


def _explicit_attention(model: torch.nn.Module) -> torch.nn.Module:
    """FlopCounterMode does not see fused attention on CPU: count the explicit QKᵀ and attention·V products."""
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return model


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_patch16_224", "vit_small_patch16_224"])
def test_largest_arch_computes_what_the_timm_model_computes(name):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    _randomize_norms(model)
    net = ofa.from_timm(model).eval()
    assert net.family == "vit" and net.active_arch == net.space.largest()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (net(x) - model(x)).abs().max() <= 1e-5
    # the largest arch's costs are the timm model's own
    macs, params = net.costs(net.space.largest())
    assert params == sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        _explicit_attention(model)(torch.randn(1, 3, 224, 224))
    assert counter.get_total_flops() == 2 * macs


@pytest.mark.parametrize("kwargs, part", [
    ({"init_values": 1e-5}, "LayerScale"),
    ({"reg_tokens": 4}, "register tokens"),
    ({"class_token": False, "global_pool": "avg"}, "pooling is 'avg'"),
    ({"qk_norm": True}, "qk-norm"),
    ({"global_pool": "avg", "fc_norm": True}, "pooling is 'avg'"),
])
def test_unsupported_variants_are_rejected_naming_the_part(kwargs, part):
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kwargs)
    with pytest.raises(ofa.OFAError, match=part):
        ofa.from_timm(model)


def test_distilled_deit_is_rejected_with_a_clear_error():
    with pytest.raises(ofa.OFAError, match="distillation token"):
        ofa.from_timm("deit_tiny_distilled_patch16_224")


def test_extraction_is_exact_and_costs_equal_the_flop_counter():
    torch.manual_seed(0)
    net = ofa.create_supernet("ofa_vit_tiny").eval()
    _randomize_norms(net)
    space = net.space
    archs = [space.largest(), space.smallest()] + [space.sample(i) for i in range(28)]
    assert len({a.resolution for a in archs}) == len(space.resolutions)  # resampled position embeddings too
    for arch in archs:
        dense = net.extract(arch).eval()
        plain = (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Conv2d, Tokens)
        assert all(type(m) in plain or not list(m.parameters(recurse=False))
                   for m in dense.modules())  # plain layers only (no elastic ones)
        x = torch.randn(2, 1, arch.resolution, arch.resolution)
        with torch.no_grad(), net.active(arch):
            assert (net(x) - dense(x)).abs().max() <= 1e-5
        macs, params = net.costs(arch)
        assert params == sum(p.numel() for p in dense.parameters())
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            _explicit_attention(dense)(x[:1])
        assert counter.get_total_flops() == 2 * macs


def test_layernorm_normalises_over_the_active_channels_only():
    net = ofa.create_supernet("ofa_vit_tiny").eval()
    narrow = net.space.arch_from_dict({**net.space.largest().to_dict(), "widths": [0.75]})
    net.set_active(narrow)
    captured = []
    handle = net.blocks[0].norm1.register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        net(torch.randn(1, 1, 32, 32))
    handle.remove()
    out = captured[0]
    assert out.shape[-1] == 48  # 0.75 x 64
    assert torch.allclose(out.mean(-1), torch.zeros(out.shape[:-1]), atol=1e-5)  # unit weights, zero biases


def test_save_load_round_trip_and_onnx_export_match(tmp_path):
    pytest.importorskip("onnxruntime")
    from deploy.export import export_onnx, verify_onnx

    torch.manual_seed(1)
    net = ofa.create_supernet("ofa_vit_tiny").eval()
    _randomize_norms(net)
    ofa.save(net, tmp_path / "supernet.safetensors")
    loaded = ofa.load(tmp_path / "supernet.safetensors").eval()
    arch = net.space.sample(3)
    dense = net.extract(arch).eval()
    x = torch.randn(2, 1, arch.resolution, arch.resolution)
    with torch.no_grad(), loaded.active(arch):
        assert torch.equal(loaded(x), net.extract(arch)(x))
    ofa.save(dense, tmp_path / "dense.safetensors")
    again = ofa.load(tmp_path / "dense.safetensors").eval()
    with torch.no_grad():
        assert torch.equal(again(x), dense(x))
    check = verify_onnx(export_onnx(dense, tmp_path / "model.onnx"), dense)
    assert check["passed"], check


def test_calibration_runs_no_forward_without_batchnorm():
    net = ofa.create_supernet("ofa_vit_tiny")
    dense = net.extract(net.space.smallest())
    calls = []
    dense.register_forward_hook(lambda *a: calls.append(1))
    ofa.calibrate_bn(dense, [torch.randn(2, 1, 24, 24)] * 3)
    assert calls == []


def test_latency_units_cover_the_space_and_build():
    net = ofa.create_supernet("ofa_vit_tiny")
    units = distinct_units(net)
    family = get_family("vit")
    for arch in [net.space.sample(i) for i in range(20)]:
        keys = [k for k, _ in family.latency_units(net.plan.static_spec(arch))]
        assert set(keys) <= set(units) and len(keys) == arch.depths[0] + 2
    # a whole dense network is its units run one after another
    arch = net.space.sample(5)
    dense = net.extract(arch).eval()
    x = torch.randn(1, 1, arch.resolution, arch.resolution)
    with torch.no_grad():
        y = x
        for (_, unit), source in zip(family.latency_units(dense.spec),
                                     [None] + list(dense.blocks) + [None]):
            module, shape = family.build_unit(unit)
            assert tuple(y.shape[1:]) == shape
            # the embedding and head units name their layers as the network does; a block as a block does
            module.load_state_dict((source or dense).state_dict(), strict=source is not None)
            y = module.eval()(y)
        assert torch.allclose(y, dense(x), atol=1e-5)


@pytest.mark.parametrize("criterion", ["l1", "fpgm"])
def test_sorting_moves_heads_whole_and_keeps_the_function(criterion):
    torch.manual_seed(0)
    net = ofa.create_supernet("ofa_vit_tiny").eval()
    _randomize_norms(net)
    with torch.no_grad():  # make head 3 of block 0 the most important, so that it must move first
        net.blocks[0].attn.qkv.weight[3 * 3 * 16:] *= 5
    x = torch.randn(2, 1, 32, 32)
    archs = [net.space.sample(i) for i in range(5)]
    with torch.no_grad():
        before = net(x)
        smaller = []
        for a in archs:
            with net.active(a):
                smaller.append(net(torch.randn(1, 1, a.resolution, a.resolution, generator=torch.Generator().manual_seed(1))))
        perms = ofa.sort_channels(net, criterion)
        assert perms["block0.heads"][0] == 3 and sorted(perms["block0.heads"]) == [0, 1, 2, 3]
        assert sorted(perms["embed"]) == list(range(64)) and sorted(perms["block2.mlp"]) == list(range(128))
        assert (net(x) - before).abs().max() <= 1e-5  # the largest arch computes the same function
        changed = [not torch.allclose(s, net.extract(a)(torch.randn(1, 1, a.resolution, a.resolution,
                                                         generator=torch.Generator().manual_seed(1))), atol=1e-5)
                   for a, s in zip(archs, smaller)]
        assert any(changed)  # smaller archs now keep other (more important) channels


def test_bn_based_criteria_are_rejected_for_layernorm_networks():
    with pytest.raises(ofa.OFAError, match="use l1 or fpgm"):
        ofa.sort_channels(ofa.create_supernet("ofa_vit_tiny"), "bn")


@pytest.mark.parametrize("mode", ["fast", "lean"])
def test_runtime_width_equals_each_dense_network_across_resolutions(tmp_path, mode):
    from deploy.slimmable import SlimmableNet

    torch.manual_seed(0)
    net = ofa.create_supernet("ofa_vit_tiny").eval()
    _randomize_norms(net)
    space = net.space
    chain = [space.arch_from_dict({"resolution": 24, "depths": [4], "widths": [0.75], "expands": [[1.0] * 4],
                                   "heads": [[2, 2, 3, 2]]}),
             space.arch_from_dict({"resolution": 28, "depths": [5], "widths": [1.0], "expands": [[1.5] * 5],
                                   "heads": [[3, 4, 3, 2, 4]]}),
             space.largest()]
    dense = [net.extract(a).eval() for a in chain]
    slim = SlimmableNet.from_dense(dense, mode=mode)
    slim.save(tmp_path / "slim")
    loaded = SlimmableNet.load(tmp_path / "slim", mode=mode)
    for i, (a, d) in enumerate(zip(chain, dense)):
        x = torch.randn(2, 1, a.resolution, a.resolution)
        for s in (slim, loaded):
            s.set_width(i)
            with torch.inference_mode():
                assert (s(x) - d(x)).abs().max() <= 1e-5
        assert torch.equal(slim.extract(i).tokens.pos_embed, d.tokens.pos_embed)  # resampled per resolution


def test_the_shipped_schedule_trains_and_sorts_heads_before_widening(tmp_path):
    from train.config import read_config
    from train.trainer import train

    config = read_config(CONFIGS / "vit_tiny_cpu.yaml")
    config.update(batch_size=16, max_steps_per_epoch=2, checkpoint_every=100,
                  eval={"calib_images": 32, "val_images": 48, "batch_size": 48})
    config["phases"] = [dict(p, epochs=1, warmup_epochs=0) for p in config["phases"] if p["name"] in ("full", "heads")]
    result = train(config, tmp_path / "run", progress=False)
    assert result.global_step == 4
    ckpt = torch.load(sorted((tmp_path / "run" / "checkpoints").glob("step*.pt"))[-1], weights_only=True)
    assert ckpt["sorted_phases"] == [1]  # heads and MLP channels sorted before the phase that widens them
    net = ofa.load(tmp_path / "run" / "supernet.safetensors")
    assert net.family == "vit" and {r["subnet"] for r in result.metrics} == {"largest", "middle", "smallest"}


def test_deit_imagenet_config_opens_the_imported_space_phase_by_phase():
    from train.config import phase_space, read_config, resolve_config

    config = resolve_config(read_config(CONFIGS / "deit_imagenet.yaml"))
    net = ofa.from_timm(config["timm"]["name"])
    spaces = [phase_space(net.space, phase) for phase in config["phases"]]
    assert spaces[-1] == net.space  # the last phase trains the whole space
    assert [len(s.heads[0]) for s in spaces] == [1, 3, 3] and [len(s.widths[0]) for s in spaces] == [1, 1, 2]
