"""Turn a timm ResNet into a supernet whose largest arch computes exactly what the model computes.

The model's depths, widths and expand ratios become the largest choices of the derived search space; its
weights (a user's pretrained model) become the supernet's. Weights come from a local ``checkpoint_path`` or from
the instance given: nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

from torch import nn

from ...errors import OFAError
from ...timm_create import reject as timm_reject
from ...timm_create import timm_model

SUPPORTED = ("plain timm ResNets (BasicBlock or Bottleneck, 7x7 stem with max pool, 1x1 projection shortcuts): "
             "resnet18, resnet26, resnet34, resnet50, resnet101, resnet152")
DEFAULT_WIDTH_MULTS = (0.65, 0.8, 1.0)
DEFAULT_STEM_MULTS = (0.8, 0.9, 1.0)
DEFAULT_EXPAND_FRACTIONS = (0.35, 0.5, 0.75, 1.0)


def _check_resnet(model: nn.Module) -> None:
    from timm.models.resnet import BasicBlock, Bottleneck

    def reject(why: str) -> NoReturn:
        timm_reject(why, SUPPORTED)

    if not isinstance(model.conv1, nn.Conv2d) or model.conv1.kernel_size != (7, 7):
        reject("deep stem, as in resnet*d / resnet*c")
    if not isinstance(model.maxpool, nn.MaxPool2d):
        reject("the stem pool is not a max pool")
    if not isinstance(model.act1, nn.ReLU) or type(model.bn1) is not nn.BatchNorm2d:
        reject("activation or normalisation other than ReLU and BatchNorm2d")
    if getattr(model.global_pool, "pool_type", "avg") != "avg":
        reject("global pooling other than average")
    for name in ("layer1", "layer2", "layer3", "layer4"):
        for block in getattr(model, name):
            if not isinstance(block, (BasicBlock, Bottleneck)):
                reject(f"block type {type(block).__name__}")
            if getattr(block, "se", None) is not None:
                reject("squeeze-excite blocks (seresnet)")
            if not isinstance(getattr(block, "aa", nn.Identity()), nn.Identity):
                reject("anti-aliased downsampling")
            conv_mid = block.conv2 if isinstance(block, Bottleneck) else block.conv1
            if conv_mid.groups != 1:
                reject("grouped convolutions (resnext)")
            if conv_mid.dilation != (1, 1):
                reject("dilated convolutions (output_stride < 32)")
            ds = block.downsample
            if ds is not None and not (isinstance(ds, nn.Sequential) and isinstance(ds[0], nn.Conv2d)
                                       and ds[0].kernel_size == (1, 1)):
                reject("average-pool downsampling (resnet*d)")


def handles(model: str | nn.Module) -> bool:
    """Whether ``model`` (a timm name or instance) is a timm ResNet (checked in detail when importing)."""
    if isinstance(model, str):
        from timm.models import is_model_in_modules

        return is_model_in_modules(model, ["resnet"])
    from timm.models.resnet import ResNet

    return isinstance(model, ResNet)


def from_timm(model: str | nn.Module, checkpoint_path: str | None = None, num_classes: int | None = None,
              in_chans: int | None = None, resolutions: Sequence[int] | None = None,
              width_mults: Sequence[float] = DEFAULT_WIDTH_MULTS, stem_mults: Sequence[float] = DEFAULT_STEM_MULTS,
              expand_fractions: Sequence[float] = DEFAULT_EXPAND_FRACTIONS, depth_choices: int = 2,
              divisor: int = 8):
    """A ResNet supernet from a timm model name or instance.

    The largest arch is the model itself. Smaller choices: each stage keeps its first ``max(1, D - k)`` ..
    ``D`` blocks (``k < depth_choices``), the residual stream takes ``width_mults``, the stem ``stem_mults``, and
    each block's middle channels take ``expand_fractions`` of the model's own. ``num_classes`` replaces the
    classifier (a new head is untrained: fine-tune it before using the supernet as a teacher).
    """
    import timm

    from .supernet import OFAResNet

    name, model = timm_model(model, checkpoint_path, in_chans, head_key="fc.weight", stem_key="conv1.weight",
                             supported=SUPPORTED, is_family=handles, family_text="a timm ResNet",
                             num_classes=num_classes, zero_init_last=False)
    _check_resnet(model)
    layers = [model.layer1, model.layer2, model.layer3, model.layer4]
    bottleneck = hasattr(layers[0][0], "conv3")
    out_conv = "conv3" if bottleneck else "conv2"
    stage_channels = [getattr(layer[0], out_conv).out_channels for layer in layers]
    mid_ratios = {layer[0].conv1.out_channels / c for layer, c in zip(layers, stage_channels)}
    if len(mid_ratios) != 1 or any(b.conv1.out_channels != layer[0].conv1.out_channels
                                   for layer in layers for b in layer):
        raise OFAError(f"unsupported timm model (middle channels vary within the network); supported: {SUPPORTED}")
    ratio = mid_ratios.pop()
    data = timm.data.resolve_data_config({}, model=model)
    size = data["input_size"][-1]
    if resolutions is None:
        resolutions = sorted({int(round(size * f / 32)) * 32 for f in (0.57, 0.71, 0.86, 1.0)})
    config: dict[str, Any] = dict(
        block="bottleneck" if bottleneck else "basic",
        stage_channels=stage_channels,
        depths=[list(range(max(1, len(layer) - depth_choices + 1), len(layer) + 1)) for layer in layers],
        strides=[getattr(layer[0], "conv2" if bottleneck else "conv1").stride[0] for layer in layers],
        stem_channels=model.conv1.out_channels, stem_type="conv7_pool",
        expand_ratios=[round(ratio * f, 6) for f in expand_fractions],
        width_mults=list(width_mults), stem_mults=list(stem_mults), resolutions=list(resolutions),
        in_chans=model.conv1.in_channels, num_classes=model.num_classes, divisor=divisor)
    data_config = {"input_size": [config["in_chans"], size, size], "mean": list(data["mean"]),
                   "std": list(data["std"]), "interpolation": data["interpolation"], "crop_pct": data["crop_pct"]}
    origin = {"timm_model": name, "timm_version": timm.__version__, "checkpoint_path": checkpoint_path}
    net = OFAResNet(name=f"timm:{name}", data_config=data_config, origin=origin, **config)
    state = {k: v for k, v in model.state_dict().items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise OFAError(f"unsupported timm model (layers do not map onto the supernet: "
                       f"{(missing or unexpected)[0]}); supported: {SUPPORTED}")
    return net
