"""What ``ofa demo`` trains and searches, per demo supernet: the shipped CPU config (a copy of
``configs/tiny_cpu.yaml`` or ``configs/mbv3_tiny_cpu.yaml``, kept equal by a test, since an installed package has
no ``configs/`` folder) and three MAC budgets spread over the supernet's cost range."""

from __future__ import annotations

import copy
from typing import Any

_COMMON: dict[str, Any] = {
    "data": {"spec": "mnist5k", "seed": 0}, "seed": 0,
    "optimizer": {"opt": "sgd", "momentum": 0.9, "weight_decay": 5e-5, "filter_bias_and_bn": True},
    "scheduler": {"sched": "cosine", "warmup_lr": 1e-3, "min_lr": 1e-4}, "label_smoothing": 0.1,
    "num_random": 2, "kd_ratio": 0.0, "sort_criterion": "l1", "checkpoint_every": 200,
    "eval": {"calib_images": 500, "val_images": None, "batch_size": 250},
}

DEMOS: dict[str, dict[str, Any]] = {
    "ofa_resnet_tiny": {
        "config": dict(_COMMON, supernet={"name": "ofa_resnet_tiny"}, batch_size=16, phases=[
            {"name": "full", "epochs": 4, "lr": 0.15, "warmup_epochs": 1},
            {"name": "depth", "epochs": 1, "lr": 0.07, "resolutions": "all", "depths": "all"},
            {"name": "expand", "epochs": 1, "lr": 0.07, "resolutions": "all", "depths": "all", "expands": "all"},
            {"name": "width", "epochs": 4, "lr": 0.07, "resolutions": "all", "depths": "all", "expands": "all",
             "widths": "all", "stem": "all"},
        ]),
        "macs": {"micro": 3_000_000, "mobile": 8_000_000, "server": 20_000_000},
        "quick": {"batch_size": 64, "steps_per_epoch": 12},  # 36 steps of the full network, 12 per later phase
        "shipped": "tiny_cpu.yaml",
    },
    "ofa_mbv3_tiny": {
        "config": dict(_COMMON, supernet={"name": "ofa_mbv3_tiny"}, batch_size=32, channels_last=True, num_random=1,
                       optimizer=dict(_COMMON["optimizer"], weight_decay=3e-5), checkpoint_every=1000, phases=[
            {"name": "full", "epochs": 5, "lr": 0.1},
            {"name": "kernel", "epochs": 1, "lr": 0.05, "resolutions": "all", "kernels": "all"},
            {"name": "depth", "epochs": 1, "lr": 0.05, "resolutions": "all", "kernels": "all", "depths": "all"},
            {"name": "expand", "epochs": 1, "lr": 0.05, "resolutions": "all", "kernels": "all", "depths": "all",
             "expands": "all"},
        ]),
        "macs": {"micro": 3_000_000, "mobile": 6_000_000, "server": 12_000_000},
        "quick": {"batch_size": 32, "steps_per_epoch": 40},  # the full MobileNet needs ~100 steps to learn
        "shipped": "mbv3_tiny_cpu.yaml",
    },
}


def demo_config(quick: bool, supernet: str = "ofa_resnet_tiny") -> dict[str, Any]:
    """The demo's training config; ``quick`` trains the full network 3 short epochs and each later phase one (a
    weak largest subnet teaches badly in place)."""
    config = copy.deepcopy(DEMOS[supernet]["config"])
    if quick:
        for phase in config["phases"]:
            phase["epochs"], phase["warmup_epochs"] = (3 if phase["name"] == "full" else 1), 0
        quick_steps = DEMOS[supernet]["quick"]
        config.update(batch_size=quick_steps["batch_size"], max_steps_per_epoch=quick_steps["steps_per_epoch"],
                      checkpoint_every=20, eval={"calib_images": 256, "val_images": 500, "batch_size": 250})
    return config
