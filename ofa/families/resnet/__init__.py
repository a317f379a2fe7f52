"""The ResNet family: basic and bottleneck ResNets, elastic in depth, stage width, expand and resolution."""

from __future__ import annotations

from ...registry import register_family, register_supernet
from .dense import StaticResNet
from .family import ResNetFamily
from .plan import ResNetPlan
from .supernet import OFAResNet

__all__ = ["OFAResNet", "ResNetFamily", "ResNetPlan", "StaticResNet"]

register_family(ResNetFamily())

_BASIC = dict(block="basic", expand_ratios=[0.35, 0.5, 0.75, 1.0], width_mults=[0.65, 0.8, 1.0],
              stem_mults=[0.8, 0.9, 1.0])

register_supernet("ofa_resnet_tiny", OFAResNet, **_BASIC, stage_channels=[32, 64, 112],
                  depths=[[1, 2], [1, 2], [1, 2]], strides=[2, 2, 2], stem_channels=32, stem_type="conv3",
                  resolutions=[16, 20, 24, 28, 32], in_chans=1, num_classes=10)
register_supernet("ofa_resnet18", OFAResNet, **_BASIC, stage_channels=[64, 128, 256, 512],
                  depths=[[1, 2]] * 4, strides=[1, 2, 2, 2], stem_channels=64, stem_type="conv7_pool",
                  resolutions=[128, 160, 192, 224])
register_supernet("ofa_resnet34", OFAResNet, **_BASIC, stage_channels=[64, 128, 256, 512],
                  depths=[[1, 2, 3], [2, 3, 4], [4, 5, 6], [1, 2, 3]], strides=[1, 2, 2, 2], stem_channels=64,
                  stem_type="conv7_pool", resolutions=[128, 160, 192, 224])
# The once-for-all ResNet-50 space: depth = base [2, 2, 4, 2] + {0, 1, 2}, expand {0.2, 0.25, 0.35},
# width {0.65, 0.8, 1.0}. Its largest arch is wider and deeper than a plain ResNet-50, by design.
register_supernet("ofa_resnet50", OFAResNet, block="bottleneck", stage_channels=[256, 512, 1024, 2048],
                  depths=[[2, 3, 4], [2, 3, 4], [4, 5, 6], [2, 3, 4]], strides=[1, 2, 2, 2], stem_channels=64,
                  stem_type="conv7_pool", expand_ratios=[0.2, 0.25, 0.35], width_mults=[0.65, 0.8, 1.0],
                  stem_mults=[0.8, 0.9, 1.0], resolutions=[128, 160, 192, 224])
