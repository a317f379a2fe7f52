"""Shared fixtures. Equality tests must be able to fail: fresh networks hide slicing bugs (BN is an identity
with fresh statistics), so tests randomise every BN's affine parameters and running statistics first."""

from __future__ import annotations

import pytest
import torch
from pg_server import postgres_server  # noqa: F401  (one real PostgreSQL server per session)
from torch import nn

import ofa


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random weights, biases and running statistics (in place); returns the model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield


@pytest.fixture
def tiny():
    """A randomised ofa_resnet_tiny supernet (1 input channel, 10 classes) in eval mode."""
    return randomize_bn(ofa.create_supernet("ofa_resnet_tiny")).eval()


def mini_bottleneck(**overrides):
    """A small bottleneck ResNet supernet (the ofa_resnet50 structure at a CPU-test size)."""
    from ofa.families.resnet import OFAResNet

    config = dict(block="bottleneck", stage_channels=[64, 96, 128], depths=[[1, 2], [1, 2, 3], [1, 2]],
                  strides=[1, 2, 2], stem_channels=16, stem_type="conv7_pool", expand_ratios=[0.2, 0.25, 0.35],
                  width_mults=[0.65, 0.8, 1.0], stem_mults=[0.8, 0.9, 1.0], resolutions=[32, 40, 48],
                  in_chans=3, num_classes=7)
    config.update(overrides)
    return OFAResNet(**config)


FAMILY_BUILDERS = {
    "ofa_resnet_tiny": lambda: ofa.create_supernet("ofa_resnet_tiny"),
    "mini_bottleneck": mini_bottleneck,
}


@pytest.fixture(params=sorted(FAMILY_BUILDERS))
def supernet(request):
    """Each small test supernet, randomised, in eval mode."""
    return randomize_bn(FAMILY_BUILDERS[request.param](), seed=1).eval()
