"""ofa.data: seeded splits, the one eval preprocessing, deterministic augmentation, imagefolder, errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ofa
from ofa import OFAError
from ofa.data import check_images, load_data, load_run_data


@pytest.fixture(scope="module")
def mnist():
    return load_data("mnist5k", seed=0)


def _indices(data, split):
    return set(data.splits[split][1].tolist())


def test_mnist5k_splits_are_disjoint_seeded_and_cover_the_data(mnist):
    assert (mnist.num_classes, mnist.in_chans) == (10, 1)
    assert mnist.split_sizes == {"train": 3000, "calib": 500, "val": 750, "test": 750}
    sets = [_indices(mnist, s) for s in ("train", "calib", "val", "test")]
    assert sum(len(s) for s in sets) == len(set().union(*sets)) == 5000
    again = load_data("mnist5k", seed=0)
    other = load_data("mnist5k", seed=1)
    assert _indices(again, "test") == _indices(mnist, "test")
    assert _indices(other, "test") != _indices(mnist, "test")
    c = mnist.data_config
    assert c["input_size"] == [1, 28, 28] and len(c["mean"]) == len(c["std"]) == 1
    assert 0.05 < c["mean"][0] < 0.25 and {"interpolation", "crop_pct"} <= set(c)


def test_eval_loader_is_deterministic_normalised_and_at_the_requested_resolution(mnist):
    batches = list(mnist.eval_loader("val", 16, batch_size=100, limit=250))
    assert [len(y) for _, y in batches] == [100, 100, 50]
    x, y = batches[0]
    assert x.shape == (100, 1, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(set(y.tolist())) >= 8  # a limited split is a random sample, not one class
    full = torch.cat([x for x, _ in mnist.eval_loader("calib", 28, batch_size=64)])
    assert abs(full.mean().item()) < 0.2 and 0.8 < full.std().item() < 1.2  # normalised with the data's stats
    again = next(iter(mnist.eval_loader("val", 16, batch_size=100)))
    assert torch.equal(again[0], x) and torch.equal(again[1], y)
    with pytest.raises(OFAError, match="unknown split 'holdout'"):
        mnist.eval_loader("holdout", 16)


def test_train_augmentation_depends_only_on_seed_epoch_and_index(mnist):
    full = list(mnist.train_loader(32, 64, seed=3, epoch=1))
    assert full[0][0].shape == (64, 1, 32, 32) and len(full) == 3000 // 64
    resumed = list(mnist.train_loader(32, 64, seed=3, epoch=1, start=5, num_workers=2))
    assert len(resumed) == len(full) - 5
    assert torch.equal(resumed[0][0], full[5][0]) and torch.equal(resumed[-1][1], full[-1][1])
    other_epoch = next(iter(mnist.train_loader(32, 64, seed=3, epoch=2)))
    assert not torch.equal(other_epoch[0], full[0][0])
    # two ranks split every global batch between them, without overlap
    r0 = next(iter(mnist.train_loader(32, 16, seed=3, epoch=1, rank=0, world=2)))[1]
    r1 = next(iter(mnist.train_loader(32, 16, seed=3, epoch=1, rank=1, world=2)))[1]
    assert torch.equal(torch.cat([r0, r1]), next(iter(mnist.train_loader(32, 32, seed=3, epoch=1)))[1])


def _write_images(folder, classes=3, per_class=12, size=20, mode="RGB"):
    rng = np.random.default_rng(0)
    for c in range(classes):
        (folder / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            pixels = (rng.random(shape) * 60 + c * 80).astype(np.uint8)
            Image.fromarray(pixels, mode=mode).save(folder / f"class_{c}" / f"{i}.png")


def test_imagefolder_from_written_images(tmp_path):
    _write_images(tmp_path / "flat", classes=3, per_class=12)
    data = load_data(f"imagefolder:{tmp_path / 'flat'}", seed=0)
    assert (data.num_classes, data.in_chans) == (3, 3)
    assert sum(data.split_sizes.values()) == 36 and min(data.split_sizes.values()) >= 1
    x, y = next(iter(data.eval_loader("train", 24, batch_size=8)))
    assert x.shape == (8, 3, 24, 24) and int(y.max()) <= 2
    # class brightness is recoverable after preprocessing: labels really belong to their images
    means = torch.cat([x for x, _ in data.eval_loader("train", 24)]).mean((1, 2, 3))
    labels = torch.cat([y for _, y in data.eval_loader("train", 24)])
    assert means[labels == 0].max() < means[labels == 2].min()

    _write_images(tmp_path / "split" / "train", classes=2, per_class=10, mode="L")
    _write_images(tmp_path / "split" / "val", classes=2, per_class=4, mode="L")
    data = load_data(f"imagefolder:{tmp_path / 'split'}")
    assert (data.num_classes, data.in_chans) == (2, 1)
    assert data.split_sizes["val"] + data.split_sizes["test"] == 8
    assert data.split_sizes["train"] + data.split_sizes["calib"] == 20


def test_load_run_data_rebuilds_the_same_splits(tmp_path, mnist):
    (tmp_path / "config.yaml").write_text("data: {spec: mnist5k, root: null, seed: 0}\n")
    data = load_run_data(tmp_path)
    assert _indices(data, "val") == _indices(mnist, "val")
    with pytest.raises(OFAError, match="config.yaml does not exist"):
        load_run_data(tmp_path / "nowhere")


def test_clear_errors_for_missing_paths_and_unknown_datasets(tmp_path):
    with pytest.raises(OFAError, match="does not exist"):
        load_data(f"imagefolder:{tmp_path / 'missing'}")
    with pytest.raises(OFAError, match="does not exist.*download"):
        load_data(f"cifar10:{tmp_path / 'missing'}")
    with pytest.raises(OFAError, match="cannot load dataset 'no_such_dataset'.*mnist5k"):
        load_data("no_such_dataset")
    (tmp_path / "one").mkdir()
    with pytest.raises(OFAError, match="one sub-folder per class"):
        load_data(f"imagefolder:{tmp_path / 'one'}")


def test_unreadable_image_is_skipped_with_a_warning_and_the_pre_pass_names_it(tmp_path, capsys):
    import ofa.data.sources as data_module

    _write_images(tmp_path / "imgs", classes=3, per_class=12)
    data = load_data(f"imagefolder:{tmp_path / 'imgs'}", seed=0)
    source, indices = data.splits["train"]
    bad = source.describe(int(indices[3]))
    Path(bad).write_bytes(b"not a png")  # a truncated download, a stray file
    data_module.UNREADABLE.clear()
    labels = torch.cat([y for _, y in data.train_loader(20, 4, seed=0, epoch=0)])
    assert len(labels) == 4 * (data.split_sizes["train"] // 4)  # every batch full: the next image stood in
    assert list(data_module.UNREADABLE) == [bad] and bad in capsys.readouterr().err
    with pytest.raises(OFAError, match=r"1 unreadable image\(s\): .*" + re.escape(Path(bad).name)):
        check_images(data)


def test_a_new_data_source_is_one_registered_function(tmp_path, monkeypatch):
    import ofa.data.loaders as loaders
    from ofa.data import Data, DataRequest, register_dataset
    from ofa.data.dataset import splits_from
    from ofa.data.sources import ArraySource

    monkeypatch.setattr(loaders, "_LOADERS", dict(loaders._LOADERS))
    monkeypatch.setattr(loaders, "_PATH_PREFIXES", list(loaders._PATH_PREFIXES))
    seen = []

    @register_dataset("stripes", path=True)
    def load_stripes(request: DataRequest) -> Data:
        seen.append(request)
        images = np.repeat(np.arange(40, dtype=np.uint8)[:, None, None] * 6, 8, axis=1).repeat(8, axis=2)
        source = ArraySource(images, np.arange(40) % 2)
        return Data("stripes", 2, 1, {"input_size": [1, 8, 8], "mean": [0.5], "std": [0.5],
                                      "interpolation": "bilinear", "crop_pct": 1.0}, splits_from(source, None, 0))

    data = load_data(f"Stripes:{tmp_path}", seed=3)
    assert seen[0].kind == "stripes" and seen[0].path == str(tmp_path) and seen[0].seed == 3
    assert data.spec == {"spec": f"Stripes:{tmp_path}", "root": None, "seed": 3} and sum(data.split_sizes.values()) == 40
    with pytest.raises(OFAError, match="did you mean stripes:/x"):
        load_data("stripes/x")


def test_imagenet_statistics_are_timms():
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from ofa.data import IMAGENET_MEAN, IMAGENET_STD

    assert (IMAGENET_MEAN, IMAGENET_STD) == (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    assert ofa.create_supernet("ofa_resnet_tiny", num_classes=10, in_chans=3).data_config["mean"] == list(IMAGENET_MEAN)
