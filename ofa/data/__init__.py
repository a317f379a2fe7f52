"""Datasets: one seeded train / calib / val / test split and one eval preprocessing, shared by train, search and
deploy.

``load_data(spec)`` picks a loader by the spec's prefix (:mod:`ofa.data.loaders`, where ``register_dataset`` adds
one); a :class:`Data` (:mod:`ofa.data.dataset`) holds the splits and hands out eval and training batches; images
come from sources that skip unreadable files (:mod:`ofa.data.sources`). Names are imported on first use, so
``import ofa.data`` (and a supernet recording its default preprocessing from :mod:`ofa.data.stats`) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ofa.lazy import lazy_exports

_EXPORTS = {
    "Data": "dataset", "SPLITS": "dataset",
    "DataRequest": "loaders", "SPECS_HELP": "loaders", "check_dataset_spec": "loaders", "load_data": "loaders",
    "load_run_data": "loaders", "register_dataset": "loaders",
    "check_images": "sources",
    "IMAGENET_MEAN": "stats", "IMAGENET_STD": "stats",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from .dataset import SPLITS, Data
    from .loaders import (
        SPECS_HELP,
        DataRequest,
        check_dataset_spec,
        load_data,
        load_run_data,
        register_dataset,
    )
    from .sources import check_images
    from .stats import IMAGENET_MEAN, IMAGENET_STD
