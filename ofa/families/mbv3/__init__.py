"""The MobileNetV3 / EfficientNet family: elastic depth, expand ratio, depthwise kernel, width and resolution."""

from __future__ import annotations

from ...registry import register_family, register_supernet
from .dense import StaticMBConvNet
from .family import MBConvFamily
from .plan import MBConvPlan
from .supernet import OFAMobileNet

__all__ = ["MBConvFamily", "MBConvPlan", "OFAMobileNet", "StaticMBConvNet"]

register_family(MBConvFamily())

# The once-for-all MobileNetV3 space: stem 16, a fixed depthwise-separable first block, five MBConv stages
# (24, 40, 80, 112, 160; SE in stages 1, 3, 4; ReLU then hard-swish), final expand 960 and a 1280 head.
_OFA_MBV3 = dict(style="mobilenetv3", stem_channels=16, first_channels=16, strides=[2, 2, 2, 1, 2],
                 kernel_sizes=[3, 5, 7], expand_ratios=[3, 4, 6], acts=["relu", "relu", "hswish", "hswish", "hswish"],
                 se=[False, True, False, True, True], depths=[[2, 3, 4]] * 5)

register_supernet("ofa_mbv3", OFAMobileNet, **_OFA_MBV3, stage_channels=[24, 40, 80, 112, 160], head_channels=960,
                  num_features=1280, resolutions=[128, 160, 192, 224])
# The same structure for 28-32 px inputs on a CPU: stride-1 first stage, stem 8, narrower stages and head.
register_supernet("ofa_mbv3_tiny", OFAMobileNet, **dict(_OFA_MBV3, strides=[1, 2, 2, 1, 2], stem_channels=8,
                                                         first_channels=8),
                  stage_channels=[16, 24, 32, 48, 64], head_channels=256, num_features=384,
                  resolutions=[24, 28, 32], in_chans=1, num_classes=10)
