"""Where training images come from: sources (raw images and labels, knowing nothing of splits or transforms) and
the dataset a loader sees (one split through one transform, each training sample augmented from its own seed).

An image that cannot be read is skipped with a warning (``SplitDataset``) or, with the opt-in pre-pass
(``check_images``), named before training.
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ofa.errors import OFAError

if TYPE_CHECKING:
    from .dataset import Data


# -- sources: a list of (image, label) that knows nothing about splits or transforms ---------------------------
class Source:
    """Random access to raw images (PIL) and integer labels."""

    def __len__(self) -> int:
        raise NotImplementedError

    def image(self, i: int) -> Image.Image:
        raise NotImplementedError

    def label(self, i: int) -> int:
        raise NotImplementedError

    def describe(self, i: int) -> str:
        """How a warning names sample ``i`` (a file path where there is one)."""
        return f"sample {i}"


class ArraySource(Source):
    """Images in a uint8 array (N, H, W) or (N, H, W, C)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])

    def label(self, i: int) -> int:
        return int(self.labels[i])


class FileSource(Source):
    """Image files with labels; converted to the data's channel mode on read."""

    def __init__(self, files: Sequence[str], labels: Sequence[int], mode: str) -> None:
        self.files, self.labels, self.mode = list(files), np.asarray(labels, dtype=np.int64), mode

    def __len__(self) -> int:
        return len(self.files)

    def image(self, i: int) -> Image.Image:
        with Image.open(self.files[i]) as img:
            return img.convert(self.mode)

    def describe(self, i: int) -> str:
        return self.files[i]

    def label(self, i: int) -> int:
        return int(self.labels[i])


class DatasetSource(Source):
    """A map-style dataset returning (PIL image, label) pairs (torchvision, timm)."""

    def __init__(self, dataset: Any, mode: str) -> None:
        self.dataset, self.mode = dataset, mode

    def __len__(self) -> int:
        return len(self.dataset)

    def image(self, i: int) -> Image.Image:
        img = self.dataset[i][0]
        if not isinstance(img, Image.Image):
            img = Image.fromarray(np.asarray(img))
        return img.convert(self.mode)

    def label(self, i: int) -> int:
        targets = getattr(self.dataset, "targets", None)
        return int(targets[i]) if targets is not None else int(self.dataset[i][1])


# -- datasets the loaders see ----------------------------------------------------------------------------------
def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one training sample: a pure function, so resume and workers cannot change it."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class SplitDataset(Dataset):
    """The samples of one split through one transform. With ``aug_seed`` set, sample ``i`` is augmented with the
    random state ``sample_seed(*aug_seed, i)`` (and the process's random state is left untouched)."""

    def __init__(self, source: Source, indices: np.ndarray, transform, aug_seed: tuple[int, int] | None = None):
        self.source, self.indices, self.transform, self.aug_seed = source, indices, transform, aug_seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j, img = self._readable(i)
        if self.aug_seed is None:
            x = self.transform(img)
        else:
            s = sample_seed(self.aug_seed[0], self.aug_seed[1], i)
            py_state, torch_state = random.getstate(), torch.get_rng_state()
            try:
                random.seed(s)  # timm's random crop draws from `random`, torchvision's flips/jitter from torch
                torch.manual_seed(s)
                x = self.transform(img)
            finally:
                random.setstate(py_state)
                torch.set_rng_state(torch_state)
        return x, self.source.label(j)


    def _readable(self, i: int) -> tuple[int, Image.Image]:
        """Sample ``i``'s image, or, when its file cannot be read, the next readable one of the split (a pure
        function of ``i``, so a resumed run reads the same images): one bad file must not end a long run."""
        for k in range(len(self.indices)):
            j = int(self.indices[(i + k) % len(self.indices)])
            try:
                return j, self.source.image(j)
            except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for truncated or foreign files
                name = self.source.describe(j)
                if name not in UNREADABLE:
                    UNREADABLE[name] = f"{type(e).__name__}: {e}"
                    print(f"warning: skipping unreadable image {name} ({type(e).__name__}: {e})", file=sys.stderr)
        raise OFAError(f"no image of this split can be read (e.g. {next(iter(UNREADABLE), '?')})")


UNREADABLE: dict[str, str] = {}  # the images this process skipped, for the run's summary


def check_images(data: Data) -> None:
    """The opt-in pre-pass (``data: {check_images: true}``): open every image of every split before training."""
    from tqdm import tqdm

    bad = []
    for split, (source, indices) in data.splits.items():
        for j in tqdm(indices, desc=f"checking {split} images", leave=False, disable=len(indices) < 1000):
            try:
                source.image(int(j))
            except (OSError, ValueError, SyntaxError) as e:
                bad.append(f"{source.describe(int(j))} ({type(e).__name__})")
    if bad:
        raise OFAError(f"{len(bad)} unreadable image(s): {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; "
                       "remove or replace them (or train without check_images: unreadable ones are then skipped "
                       "with a warning)")
