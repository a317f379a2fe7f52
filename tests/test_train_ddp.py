"""A real two-process CPU run (torchrun, gloo): one process group, the same subnets on both ranks, identical
final weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml
from test_train import small_config


def test_two_process_torchrun_samples_the_same_subnets_and_ends_identical(tmp_path):
    config = small_config(log_subnets=True, batch_size=8)
    config["phases"] = [config["phases"][0], config["phases"][3]]  # full, then the whole space (with sorting)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "ofa.cli", "train", "--config", str(tmp_path / "cfg.yaml"), "--out", str(run), "--quiet", "--cpu"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = [json.loads((run / "logs" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [log["rank"] for log in logs] == [0, 1]
    assert all(log["world_size"] == 2 for log in logs)  # one group of two, not two independent runs
    assert logs[0]["subnets"] == logs[1]["subnets"] and len(logs[0]["subnets"]) == 4
    assert len({key for step in logs[0]["subnets"] for key in step}) >= 2
    assert logs[0]["final_weights_sha256"] == logs[1]["final_weights_sha256"]
    assert (run / "supernet.safetensors").is_file() and (run / "metrics.csv").is_file()
