"""Shared fixtures. Equality tests must be able to fail: fresh networks hide slicing bugs (BN is an identity
with fresh statistics), so tests randomise every BN's affine parameters and running statistics first."""

from __future__ import annotations

import pytest
import torch
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
