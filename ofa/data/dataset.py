"""The Data object: a dataset's seeded train / calib / val / test split, its class count and channels, and the one
eval preprocessing, with the loaders every step reads batches through.

Splits: ``train`` (training), ``calib`` (BN re-estimation), ``val`` (what search selects on) and ``test`` (only
for reported numbers), so a reported accuracy is never the one a selection was made on. Training images get
timm's train augmentation; everything else gets the ONE eval preprocessing (``data.data_config``) at the subnet's
own resolution. A training sample's augmentation is seeded by (seed, epoch, index), so a resumed run sees the
same augmented images as an uninterrupted one, whatever the loader workers did.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ofa.errors import OFAError

from .sources import Source, SplitDataset

SPLITS = ("train", "calib", "val", "test")
# Fractions of a single pool that go to each held-out split (the rest is train).
HELDOUT_FRACTIONS = {"test": 0.15, "val": 0.15, "calib": 0.10}
MAX_CALIB = 5000
EVAL_CACHE_BYTES = 256 * 2**20  # eval tensors of small splits are cached: BN calibration re-reads them often


class EpochBatchSampler(Sampler):
    """Batches of one epoch in a (seed, epoch)-seeded order; rank ``r`` of ``world`` takes its share of every
    global batch; iteration starts at batch ``start`` (resume mid-epoch). The last partial batch is dropped."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                 start: int = 0) -> None:
        self.n, self.batch_size, self.rank, self.world, self.start = n, batch_size, rank, world, start
        self.order = np.random.default_rng([seed, epoch]).permutation(n)

    def __len__(self) -> int:
        return max(0, self.n // (self.batch_size * self.world) - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.batch_size * self.world
        for b in range(self.start, self.n // step):
            chunk = self.order[b * step:(b + 1) * step]
            yield chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size].tolist()


class _CachedBatches:
    """Re-iterable batches of precomputed eval tensors."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self.y), self.batch_size):
            yield self.x[i:i + self.batch_size], self.y[i:i + self.batch_size]


# -- the Data object -------------------------------------------------------------------------------------------
@dataclass
class Data:
    """A dataset with its splits, class count, channels and the one eval preprocessing."""

    name: str
    num_classes: int
    in_chans: int
    data_config: dict[str, Any]
    splits: dict[str, tuple[Source, np.ndarray]]
    spec: dict[str, Any] = field(default_factory=dict)  # what load_run_data needs to rebuild this Data
    augment: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)  # label i's name, where the dataset has names
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def split_sizes(self) -> dict[str, int]:
        return {name: len(idx) for name, (_, idx) in self.splits.items()}

    def _split(self, split: str) -> tuple[Source, np.ndarray]:
        if split not in self.splits:
            raise OFAError(f"unknown split {split!r}; allowed: {list(SPLITS)}")
        return self.splits[split]

    def eval_transform(self, resolution: int):
        from timm.data import create_transform

        c = self.data_config
        return create_transform((self.in_chans, resolution, resolution), is_training=False, mean=c["mean"],
                                std=c["std"], interpolation=c["interpolation"], crop_pct=c["crop_pct"])

    def train_transform(self, resolution: int):
        from timm.data import create_transform

        c = self.data_config
        kwargs = dict(self.augment)
        kwargs.setdefault("interpolation", c["interpolation"])
        return create_transform((self.in_chans, resolution, resolution), is_training=True, mean=c["mean"],
                                std=c["std"], **kwargs)

    def eval_loader(self, split: str, resolution: int, batch_size: int = 256, limit: int | None = None,
                    num_workers: int = 0):
        """(images N,C,r,r float32 normalised, labels int64) batches of ``split`` in a fixed order, through the
        eval preprocessing at ``resolution``. ``limit`` keeps the first ``limit`` images."""
        source, idx = self._split(split)
        if limit is not None:
            if limit < 1:
                raise OFAError(f"limit must be a positive number of images, got {limit}")
            idx = idx[:limit]
        if batch_size < 1:
            raise OFAError(f"batch_size must be positive, got {batch_size}")
        dataset = SplitDataset(source, idx, self.eval_transform(int(resolution)))
        small = len(idx) * self.in_chans * resolution * resolution * 4 <= EVAL_CACHE_BYTES
        if small:
            key = (split, int(resolution), len(idx))
            if key not in self._cache:
                xs = [dataset[i] for i in range(len(dataset))]
                self._cache[key] = (torch.stack([x for x, _ in xs]),
                                    torch.tensor([y for _, y in xs], dtype=torch.int64))
            x, y = self._cache[key]
            return _CachedBatches(x, y, batch_size)
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)

    def train_loader(self, resolution: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
                     world: int = 1, start: int = 0, num_workers: int = 0, augment: bool = True) -> DataLoader:
        """One epoch of training batches at ``resolution``: order from (seed, epoch), each sample augmented with
        a seed from (seed, epoch, index), starting at batch ``start``; rank ``rank`` of ``world`` gets its share."""
        source, idx = self._split("train")
        if augment:
            dataset = SplitDataset(source, idx, self.train_transform(resolution), aug_seed=(seed, epoch))
        else:
            dataset = SplitDataset(source, idx, self.eval_transform(resolution))
        sampler = EpochBatchSampler(len(idx), batch_size, seed, epoch, rank, world, start)
        return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                          persistent_workers=False)


# -- splitting ---------------------------------------------------------------------------------------------------
def split_pool(n: int, seed: int, parts: dict[str, float], cap: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded disjoint subsets of range(n): each named part gets its fraction (capped); the rest is 'train'."""
    order = np.random.default_rng([seed, n]).permutation(n)
    out, at = {}, 0
    for name, frac in parts.items():
        k = int(round(n * frac))
        if cap and name in cap:
            k = min(k, cap[name])
        k = max(1, k)
        out[name] = order[at:at + k]
        at += k
    out["train"] = order[at:]
    return out


def splits_from(train: Source, held: Source | None, seed: int) -> dict[str, tuple[Source, np.ndarray]]:
    """One pool: seeded train/calib/val/test. A separate held-out source: train/calib from the first, val/test
    (seeded halves) from the second."""
    if held is None:
        parts = split_pool(len(train), seed, HELDOUT_FRACTIONS, cap={"calib": MAX_CALIB})
        splits = {name: (train, parts[name]) for name in SPLITS}
    else:
        a = split_pool(len(train), seed, {"calib": HELDOUT_FRACTIONS["calib"]}, cap={"calib": MAX_CALIB})
        b = split_pool(len(held), seed, {"test": 0.5})
        splits = {"train": (train, a["train"]), "calib": (train, a["calib"]),
                  "val": (held, b["train"]), "test": (held, b["test"])}
    for name, (_, idx) in splits.items():
        if len(idx) == 0:
            raise OFAError(f"the dataset is too small: its {name!r} split would be empty; "
                           "give it at least a few images per split")
    return splits
