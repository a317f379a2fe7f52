"""Real two-process CPU runs (torchrun, gloo): one process group, the same subnets on both ranks, identical final
weights; and the same training launched as two torchrun nodes that meet through the c10d rendezvous, as two
machines would, ending with the very same weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml
from test_train import small_config

TRAIN = ["-m", "ofa.cli", "train", "--quiet", "--cpu"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    config = small_config(log_subnets=True, batch_size=8)
    config["phases"] = [config["phases"][0], config["phases"][3]]  # full, then the whole space (with sorting)
    path = tmp_path_factory.mktemp("cfg") / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def standalone(config, tmp_path_factory):
    """The 2-process run on one node (--standalone); returns its run directory."""
    run = tmp_path_factory.mktemp("standalone") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *TRAIN,
         "--config", str(config), "--out", str(run)], capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_two_process_torchrun_samples_the_same_subnets_and_ends_identical(standalone):
    run = standalone
    logs = [json.loads((run / "logs" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [log["rank"] for log in logs] == [0, 1]
    assert all(log["world_size"] == 2 for log in logs)  # one group of two, not two independent runs
    assert logs[0]["subnets"] == logs[1]["subnets"] and len(logs[0]["subnets"]) == 4
    assert len({key for step in logs[0]["subnets"] for key in step}) >= 2
    assert logs[0]["final_weights_sha256"] == logs[1]["final_weights_sha256"]
    assert (run / "supernet.safetensors").is_file() and (run / "metrics.csv").is_file()


def test_two_nodes_meet_through_c10d_and_end_with_the_standalone_weights(config, standalone, tmp_path):
    """`torchrun --nnodes 2` started twice, as on two machines: the same command on both, rendezvous on
    127.0.0.1 (the first machine's address), each node writing into its own directory (its own disk)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "ofa-test",
         *TRAIN, "--config", str(config), "--out", str(tmp_path / f"node{i}")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV) for i in range(2)]
    try:
        outputs = [node.communicate(timeout=300)[0] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    logs = sorted((json.loads(p.read_text()) for p in tmp_path.glob("node*/logs/rank*.json")),
                  key=lambda log: log["rank"])
    assert [(log["rank"], log["world_size"]) for log in logs] == [(0, 2), (1, 2)]  # one group across the nodes
    assert logs[0]["subnets"] == logs[1]["subnets"]
    digests = {log["final_weights_sha256"] for log in logs}
    reference = json.loads((standalone / "logs" / "rank0.json").read_text())["final_weights_sha256"]
    assert digests == {reference}  # both ranks identical, and equal to the single-node 2-process run
    assert len(list(tmp_path.glob("node*/supernet.safetensors"))) == 1  # written once, by rank 0
