"""Normalisation statistics: ImageNet's (the default for RGB data), 0.5 for other channel counts, and ones
measured on an in-memory dataset.

Kept free of ``timm.data`` (seconds to import) because every supernet records a default preprocessing when it is
built; the values are timm's ``IMAGENET_DEFAULT_MEAN`` / ``IMAGENET_DEFAULT_STD`` (a test keeps them equal).
"""

from __future__ import annotations

import numpy as np

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def default_stats(in_chans: int) -> tuple[list[float], list[float]]:
    """Mean and std for data whose own statistics are not measured (image files, timm datasets)."""
    if in_chans == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return [0.5] * in_chans, [0.5] * in_chans


def array_stats(images: np.ndarray, indices: np.ndarray, in_chans: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 ``images[indices]`` (the first 10,000), rounded to 4 digits."""
    x = images[indices[:10000]].astype(np.float64) / 255.0
    x = x.reshape(len(x), -1, in_chans) if in_chans > 1 else x.reshape(len(x), -1, 1)
    return x.mean((0, 1)).round(4).tolist(), x.std((0, 1)).round(4).tolist()
