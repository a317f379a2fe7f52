"""Turn a timm MobileNetV3 or EfficientNet into a supernet whose largest arch computes what the model computes.

Derived choices: each stage keeps its first ``max(1, D - k)`` .. ``D`` blocks (``k < depth_choices``); each block's
middle channels take ``expand_fractions`` of the model's own; each stage's depthwise kernel takes the model's kernel
and the smaller odd sizes down to 3; stage widths take ``width_mults`` and the stem (with the first block)
``stem_mults``. Weights come from the instance or a local ``checkpoint_path``: nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

from torch import nn

from ...errors import OFAError
from ...timm_create import check_depth_choices, reject, timm_model

SUPPORTED = ("timm MobileNetV3 and EfficientNet with a single stride-1 depthwise-separable first block, "
             "symmetric padding and BN eps 1e-5: mobilenetv3_large_075/100, efficientnet_b0, efficientnet_lite0")
_TIMM_MODULES = ("mobilenetv3", "efficientnet")
_ACT_NAMES = {nn.ReLU: "relu", nn.Hardswish: "hswish", nn.SiLU: "silu"}


def handles(model: str | nn.Module) -> bool:
    """Whether ``model`` (a timm name or instance) belongs to the MobileNetV3/EfficientNet families."""
    if isinstance(model, str):
        from timm.models import is_model_in_modules

        return is_model_in_modules(model, list(_TIMM_MODULES))
    from timm.models.efficientnet import EfficientNet
    from timm.models.mobilenetv3 import MobileNetV3

    return isinstance(model, (EfficientNet, MobileNetV3))


def _reject(why: str) -> NoReturn:
    reject(why, SUPPORTED)


def _act(module: nn.Module, where: str) -> str:
    act = getattr(module, "act", module)
    if type(act) not in _ACT_NAMES:
        _reject(f"{where} uses activation {type(act).__name__}; allowed: ReLU, Hardswish, SiLU")
    return _ACT_NAMES[type(act)]


def _check_bn(bn: nn.Module, where: str, with_act: bool = True) -> None:
    from timm.layers import BatchNormAct2d

    if not isinstance(bn, BatchNormAct2d) or abs(bn.eps - 1e-5) > 1e-12 or not bn.affine:
        _reject(f"{where} is not a BatchNorm with eps 1e-5 (TensorFlow-ported weights such as tf_* use 1e-3)")
    if not with_act and not isinstance(bn.act, nn.Identity):
        _reject(f"{where} has an activation after the projection")


def _check_conv(conv: nn.Module, where: str, depthwise: bool = False) -> int:
    if type(conv) is not nn.Conv2d:
        _reject(f"{where} is a {type(conv).__name__} ('same' padding of TensorFlow ports is not supported)")
    k = conv.kernel_size[0]
    if conv.kernel_size != (k, k) or conv.padding != (k // 2, k // 2) or conv.dilation != (1, 1):
        _reject(f"{where} is not a square, symmetrically padded, undilated convolution")
    if conv.groups != (conv.in_channels if depthwise else 1):  # (a 1-channel stem has groups == in_channels)
        _reject(f"{where} has groups={conv.groups}")
    return k


def _se(block: nn.Module, style: str, act: str, where: str) -> int:
    """The SE's reduced channels (0 without SE), after checking it is the family's kind of SE."""
    from timm.models._efficientnet_blocks import SqueezeExcite

    se = block.se
    if isinstance(se, nn.Identity):
        return 0
    if type(se) is not SqueezeExcite:
        _reject(f"{where} uses squeeze-excite {type(se).__name__}")
    gate, want_gate = type(se.gate), nn.Hardsigmoid if style == "mobilenetv3" else nn.Sigmoid
    se_act = _act(se.act1, f"{where}.se")
    want_act = "relu" if style == "mobilenetv3" else act
    if gate is not want_gate or se_act != want_act:
        _reject(f"{where}: squeeze-excite with {se_act}/{gate.__name__}; the {style} family uses "
                f"{want_act}/{want_gate.__name__}")
    return se.conv_reduce.out_channels


def _describe(model: nn.Module) -> dict[str, Any]:
    """The constructor arguments (before elastic choices) of the supernet whose largest arch is ``model``."""
    from timm.models._efficientnet_blocks import ConvBnAct, DepthwiseSeparableConv, InvertedResidual
    from timm.models.mobilenetv3 import MobileNetV3

    style = "mobilenetv3" if isinstance(model, MobileNetV3) else "efficientnet"
    if getattr(model.global_pool, "pool_type", "avg") != "avg":
        _reject("global pooling other than average")
    if not isinstance(model.classifier, nn.Linear):
        _reject("the classifier is not a single Linear layer")
    stem_k = _check_conv(model.conv_stem, "conv_stem")
    if stem_k != 3:
        _reject("the stem is not a 3x3 convolution")
    _check_bn(model.bn1, "bn1")
    stages = list(model.blocks)
    if len(stages[0]) != 1 or type(stages[0][0]) is not DepthwiseSeparableConv:
        _reject("the first stage is not a single depthwise-separable block (as in mobilenetv3_small or "
                "efficientnet_b1 and larger)")
    first = stages[0][0]
    if first.conv_dw.stride != (1, 1) or getattr(first, "conv_s2d", None) is not None:
        _reject("the first block has stride 2 (as in mobilenetv3_small)")
    _check_bn(first.bn1, "blocks.0.0.bn1")
    _check_bn(first.bn2, "blocks.0.0.bn2", with_act=False)
    first_act = _act(first.bn1, "blocks.0.0")
    config: dict[str, Any] = dict(
        style=style, stem_channels=model.conv_stem.out_channels, stem_stride=model.conv_stem.stride[0],
        stem_act=_act(model.bn1, "bn1"), first_channels=first.conv_pw.out_channels,
        first_kernel=_check_conv(first.conv_dw, "blocks.0.0.conv_dw", depthwise=True), first_act=first_act,
        first_se=bool(_se(first, style, first_act, "blocks.0.0")))
    if first.has_skip != (config["stem_channels"] == config["first_channels"]):
        _reject("the first block's residual does not follow its shapes")
    head_stage = None
    if style == "mobilenetv3":
        head_stage, stages = stages[-1], stages[:-1]
        if len(head_stage) != 1 or type(head_stage[0]) is not ConvBnAct or head_stage[0].conv.kernel_size != (1, 1):
            _reject("the last stage is not a single 1x1 ConvBnAct (final expand)")
    rows: dict[str, list] = {k: [] for k in ("stage_channels", "strides", "acts", "se", "kernel", "mids", "rds")}
    for s, stage in enumerate(stages[1:], start=1):
        where = f"blocks.{s}"
        kernels, acts, ses = set(), set(), set()
        mids, rds = [], []
        for b, block in enumerate(stage):
            w = f"{where}.{b}"
            if type(block) is not InvertedResidual or getattr(block, "conv_s2d", None) is not None:
                _reject(f"{w} is a {type(block).__name__}, not a plain inverted-residual block")
            if not isinstance(block.aa, nn.Identity):
                _reject(f"{w} uses anti-aliased downsampling")
            _check_conv(block.conv_pw, f"{w}.conv_pw")
            _check_conv(block.conv_pwl, f"{w}.conv_pwl")
            kernels.add(_check_conv(block.conv_dw, f"{w}.conv_dw", depthwise=True))
            for name in ("bn1", "bn2"):
                _check_bn(getattr(block, name), f"{w}.{name}")
            _check_bn(block.bn3, f"{w}.bn3", with_act=False)
            act = _act(block.bn1, w)
            if _act(block.bn2, w) != act:
                _reject(f"{w} uses two different activations")
            acts.add(act)
            rd = _se(block, style, act, w)
            ses.add(rd > 0)
            rds.append(rd)
            mids.append(block.conv_pw.out_channels)
            if (b > 0 and block.conv_dw.stride[0] != 1) or block.has_skip != (b > 0):
                _reject(f"{w}: only the first block of a stage may change stride or channels, the others "
                        "must be residual")
        if len(kernels) > 1 or len(acts) > 1 or len(ses) > 1:
            _reject(f"stage {where} mixes kernel sizes, activations or squeeze-excite")
        rows["stage_channels"].append(stage[0].conv_pwl.out_channels)
        rows["strides"].append(stage[0].conv_dw.stride[0])
        rows["acts"].append(acts.pop())
        rows["se"].append(ses.pop())
        rows["kernel"].append(kernels.pop())
        rows["mids"].append(mids)
        rows["rds"].append(rds)
    if style == "mobilenetv3":
        if model.conv_head.bias is None or not isinstance(model.norm_head, nn.Identity):
            _reject("conv_head without bias or with a norm layer")
        _check_bn(head_stage[0].bn1, f"blocks.{len(stages)}.0.bn1")
        head_act = _act(head_stage[0].bn1, "final expand")
        if _act(model.act2, "act2") != head_act:
            _reject("the head uses two different activations")
        config.update(head_channels=head_stage[0].conv.out_channels, num_features=model.conv_head.out_channels,
                      head_act=head_act)
    else:
        _check_bn(model.bn2, "bn2")
        config.update(head_channels=model.conv_head.out_channels, num_features=model.conv_head.out_channels,
                      head_act=_act(model.bn2, "bn2"))
    config.update(stage_channels=rows["stage_channels"], strides=rows["strides"], acts=rows["acts"], se=rows["se"])
    return config | {"_kernels": rows["kernel"], "_mids": rows["mids"], "_rds": rows["rds"]}


def from_timm(model: str | nn.Module, checkpoint_path: str | None = None, num_classes: int | None = None,
                     in_chans: int | None = None, resolutions: Sequence[int] | None = None,
                     width_mults: Sequence[float] = (0.65, 0.8, 1.0), stem_mults: Sequence[float] = (0.8, 0.9, 1.0),
                     expand_fractions: Sequence[float] = (0.35, 0.5, 0.75, 1.0), depth_choices: int = 2,
                     divisor: int = 8):
    """A MobileNetV3/EfficientNet supernet from a timm model name or instance (see :func:`ofa.from_timm`)."""
    import timm

    from .supernet import OFAMobileNet

    name, model = timm_model(model, checkpoint_path, in_chans, head_key="classifier.weight",
                             stem_key="conv_stem.weight", supported=SUPPORTED, is_family=handles,
                             family_text="a timm MobileNetV3 or EfficientNet", num_classes=num_classes)
    check_depth_choices(depth_choices)
    derived = _describe(model)
    kernels, mids, rds = derived.pop("_kernels"), derived.pop("_mids"), derived.pop("_rds")
    data = timm.data.resolve_data_config({}, model=model)
    size = data["input_size"][-1]
    if resolutions is None:
        resolutions = sorted({int(round(size * f / 32)) * 32 for f in (0.57, 0.71, 0.86, 1.0)})
    if not expand_fractions or max(expand_fractions) != 1.0 or min(expand_fractions) <= 0:
        raise OFAError(f"expand_fractions must be in (0, 1] and include 1.0, got {list(expand_fractions)!r}")
    config = dict(
        derived, depths=[list(range(max(1, len(m) - depth_choices + 1), len(m) + 1)) for m in mids],
        kernel_sizes=[list(range(3, k + 1, 2)) or [k] for k in kernels], expand_ratios=list(expand_fractions),
        mid_channels=mids, width_mults=list(width_mults), stem_mults=list(stem_mults),
        resolutions=list(resolutions), in_chans=model.conv_stem.in_channels, num_classes=model.num_classes,
        divisor=divisor)
    data_config = {"input_size": [config["in_chans"], size, size], "mean": list(data["mean"]),
                   "std": list(data["std"]), "interpolation": data["interpolation"], "crop_pct": data["crop_pct"]}
    origin = {"timm_model": name, "timm_version": timm.__version__, "checkpoint_path": checkpoint_path}
    net = OFAMobileNet(name=f"timm:{name}", data_config=data_config, origin=origin, **config)
    # The supernet's SE widths follow the family's rule; a model built with another rule does not map.
    for s, (stage, row) in enumerate(zip(net.stages, rds)):
        for b, (block, rd) in enumerate(zip(stage, row)):
            if (block.se.conv_reduce.out_channels if block.se is not None else 0) != rd:
                _reject(f"blocks.{s + 1}.{b} squeeze-excite width {rd} does not follow the {config['style']} rule")
    missing, unexpected = net.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in missing if ".transforms." not in k]  # the kernel transformations start as identities
    if missing or unexpected:
        _reject(f"layers do not map onto the supernet: {(missing or unexpected)[0]}")
    return net
