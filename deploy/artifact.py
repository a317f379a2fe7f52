"""Loading a deployed network with ``ofa`` and torch alone: no supernet, no training config, no pickle.

``RUN/deploy/DEVICE/model.safetensors`` + ``model.json`` hold the dense network's unfolded weights and its
description (arch, channel counts, preprocessing). ``load`` rebuilds it and, for inference, folds BatchNorm into
the convolutions. A directory holding ``slimmable.safetensors`` loads as a :class:`deploy.SlimmableNet`.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

import ofa
from ofa.errors import WeightsError
from ofa.fold import prepare_for_inference

MODEL = "model"


def _resolve(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        for name in (MODEL, "slimmable"):
            if (path / f"{name}.safetensors").is_file():
                return path / f"{name}.safetensors"
        raise WeightsError(f"{path} holds no deployed network (model.safetensors or slimmable.safetensors)")
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.exists():
        raise WeightsError(f"no deployed network at {path}; expected a RUN/deploy/DEVICE directory or its "
                           "model.safetensors")
    return path


def load(path: str | os.PathLike, fold: bool = True, map_location: str = "cpu") -> nn.Module:
    """A deployed network in eval mode, ready for inference.

    ``path`` is a ``RUN/deploy/DEVICE`` directory or its ``model.safetensors``. With ``fold=True`` (default)
    BatchNorm is folded into the convolutions and weights use channels-last order (faster, same outputs); ``fold=False`` keeps the stored layers
    (to re-calibrate BN on your own data). ``model.description["data_config"]`` is the preprocessing to use.
    """
    path = _resolve(path)
    if path.stem == "slimmable":
        from .slimmable import SlimmableNet

        return SlimmableNet.load(path).to(map_location)
    model = ofa.load(path, map_location=map_location)
    if getattr(model, "description", {}).get("kind") != "static":
        raise WeightsError(f"{path} holds a supernet, not a deployed network; run `ofa deploy` to make one")
    return prepare_for_inference(model, inplace=True) if fold else model
