"""Every value of a training config is checked before any work: a bad one at any level (top, data, optimizer,
scheduler, eval, timm, a phase) exits 2 at once with the allowed values named, and creates no run directory."""

from __future__ import annotations

import copy

import pytest
import yaml

from ofa.cli import main
from ofa.timing import num_threads as torch_threads
from train.trainer import Trainer

BASE = {"supernet": {"name": "ofa_resnet_tiny"}, "data": {"spec": "mnist5k"},
        "phases": [{"name": "full", "epochs": 1, "lr": 0.1}, {"name": "depth", "epochs": 1, "lr": 0.05,
                                                             "depths": "all"}]}

CASES = [  # (where, value, words the error must contain)
    (("sort_criterion",), "l2", "one of l1, bn, taylor, fpgm"),
    (("mixed_precision",), "fp8", "one of no, fp16, bf16"),
    (("kd_ratio",), 1.5, "kd_ratio must be a number >= 0 and <= 1"),
    (("num_random",), -1, "num_random must be a non-negative integer"),
    (("threads",), 0, "threads must be a positive integer or null"),
    (("log_with",), "wandb", "log_with must be null or tensorboard"),
    (("seeed",), 1, "unknown config entry 'seeed'"),
    (("data", "sed"), 0, "unknown data entry 'sed'"),
    (("data", "spec"), "imagefolder/data/x", "did you mean imagefolder:/data/x"),
    (("data", "augment"), {"scales": [0.5, 1.0]}, "unknown data.augment entry 'scales'"),
    (("optimizer", "opt"), "sgdd", "not a timm optimizer"),
    (("optimizer", "betaz"), 0.9, "betaz"),
    (("optimizer", "weight_decay"), -1, "weight_decay must be a number >= 0"),
    (("scheduler", "sched"), "cosin", "allowed sched: cosine"),
    (("scheduler", "num_epochs"), 3, "set per phase"),
    (("eval", "calib_images"), 0, "calib_images must be a positive integer"),
    (("eval", "batchsize"), 8, "unknown eval entry 'batchsize'"),
    (("phases", 1, "lr"), -0.1, "phase 'depth': lr must be a number > 0"),
    (("phases", 1, "warmup_epochs"), 1.5, "warmup_epochs must be a non-negative integer"),
    (("phases", 1, "epoch"), 2, "unknown key 'epoch'"),
    (("phases",), [], "phases must be a non-empty list"),
]


def _set(config: dict, path: tuple, value) -> dict:
    config = copy.deepcopy(config)
    node = config
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
    node[path[-1]] = value
    return config


@pytest.mark.parametrize("path, value, words", CASES, ids=["/".join(map(str, c[0])) for c in CASES])
def test_bad_config_value_is_one_line_exit_2_before_any_work(path, value, words, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Trainer, "run", lambda self: pytest.fail("training started"))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_set(BASE, path, value)))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err, err
    assert not (tmp_path / "run").exists()


def test_a_config_without_phases_is_one_line(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in BASE.items() if k != "phases"}))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "non-empty `phases:` list" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_timm_entry_and_criterion_checked_against_the_network(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Trainer, "run", lambda self: pytest.fail("training started"))
    timm_cfg = {k: v for k, v in BASE.items() if k != "supernet"}
    timm_cfg["timm"] = {"name": "resnet18", "skip_first_phase": "yes"}
    vit = dict(BASE, supernet={"name": "ofa_vit_tiny"}, sort_criterion="bn",
               phases=[{"name": "full", "epochs": 1, "lr": 0.1}, {"name": "heads", "epochs": 1, "lr": 0.1,
                                                                 "heads": "all"}])
    for config, words in ((timm_cfg, "timm: skip_first_phase must be true or false"),
                          (vit, "criterion 'bn' scores the BatchNorm")):
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        assert main(["train", "--config", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
        assert words in capsys.readouterr().err
        assert not (tmp_path / "run").exists()


def test_threads_default_to_the_cores_per_local_process_and_honour_omp(monkeypatch):
    import os

    from ofa.timing import default_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun --nproc-per-node 4
    assert default_threads() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's explicit choice wins
    assert default_threads() == 3


def test_a_collapse_in_throughput_is_hinted_once(capsys):
    from train.guards import ThroughputWatch

    watch = ThroughputWatch()
    for rate in (200.0, 210.0, 150.0):
        watch.start()
        watch.update(0, rate)
    assert "note:" not in capsys.readouterr().err
    for rate in (40.0, 30.0):
        watch.start()
        watch.update(0, rate)
    assert capsys.readouterr().err.count("training slowed from 210 to 40 images/s") == 1


def test_a_process_starved_of_cpu_time_is_hinted(capsys, monkeypatch):
    import time

    from train.guards import ThroughputWatch

    watch = ThroughputWatch()
    clock = {"wall": 0.0, "cpu": 0.0}
    monkeypatch.setattr(time, "perf_counter", lambda: clock["wall"])
    monkeypatch.setattr(time, "process_time", lambda: clock["cpu"])
    with torch_threads(2):
        watch.start()
        clock.update(wall=10.0, cpu=16.0)  # 80% of 2 threads: fine
        watch.update(0, 100.0)
        assert "note:" not in capsys.readouterr().err
        watch.start()
        clock.update(wall=20.0, cpu=20.0)  # 4 s of CPU in 10 s on 2 threads: others hold the cores
        watch.update(0, 95.0)
    assert "got 20% of the CPU time its 2 threads could use" in capsys.readouterr().err


def test_the_config_dataclass_round_trips_and_checks_values_made_in_code():
    from ofa.errors import OFAError
    from train.config import Phase, TrainConfig

    config = TrainConfig.from_dict(copy.deepcopy(BASE))
    assert config.phases[1].space == {"depths": "all"} and config.phases[1].num_random == config.num_random
    assert TrainConfig.from_dict(config.to_dict()) == config  # what config.yaml records reads back as itself
    made = TrainConfig(supernet={"name": "ofa_resnet_tiny"}, data="mnist5k",
                       phases=[Phase("full", 1, 0.1), {"name": "depth", "epochs": 1, "lr": 0.05, "depths": "all"}])
    assert made == config
    with pytest.raises(OFAError, match="config: batch_size must be a positive integer; got 0"):
        TrainConfig(supernet={"name": "ofa_resnet_tiny"}, batch_size=0, phases=[Phase("full", 1, 0.1)])
    with pytest.raises(OFAError, match="phase 'full': lr must be a number > 0; got -1"):
        Phase("full", 1, -1)


def test_a_checkpoint_position_reads_back_as_it_was_written():
    from train.position import Position

    written = {"phase": 1, "epoch": 0, "batch": 2, "global_step": 5, "phase_step": 2, "loss_sum": 4.5, "loss_n": 2}
    pos = Position.from_dict(written)  # the dict checkpoints have always held
    assert pos.to_dict() == written and list(pos.to_dict()) == list(written)
    assert pos["global_step"] == 5 and pos.mean_loss == 2.25
