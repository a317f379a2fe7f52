"""`ofa train` killed with SIGKILL (after its first checkpoint, and while a checkpoint is being written), then
resumed, ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml
from test_train import small_config as train_small_config

from train.checkpoint import latest_checkpoint
from train.trainer import train

ROOT = Path(__file__).resolve().parent.parent
# The reference trains in this process and the killed and resumed runs in subprocesses: all with one thread count,
# since CPU kernels' reductions differ in the last bits between thread counts (with OMP_NUM_THREADS=1 in the
# environment the subprocesses ran on 1 thread while earlier tests had left this process on 2).
THREADS = 2
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))

# Runs `ofa train`; with SLOW_SAVE=N the N-th checkpoint write stops after its temporary file is written and
# before the rename, so a kill lands in the middle of writing a checkpoint.
DRIVER = """
import os, sys, time, torch
n = int(os.environ.get("SLOW_SAVE", "0"))
real, calls = torch.save, [0]
def save(obj, f, *a, **k):
    real(obj, f, *a, **k)
    calls[0] += 1
    if calls[0] == n:
        print("WRITING", flush=True)
        time.sleep(600)
torch.save = save
from ofa.cli import main
sys.exit(main(sys.argv[1:]))
"""


def small_config() -> dict:
    # On CPU even where a GPU exists: bit-identical resume is the CPU promise (README, "Resume": CUDA kernels
    # are not bitwise reproducible; on an H200 these comparisons differ in every weight).
    config = train_small_config(max_steps_per_epoch=3, eval={"calib_images": 32, "val_images": 32, "batch_size": 32},
                                cpu=True, threads=THREADS)
    # Two phases keep it short: the full network, then the whole space (with its channel sort); the frozen teacher
    # is on, so its state is part of what a resume must restore.
    config["phases"] = [config["phases"][0], config["phases"][-1]]
    return config


def _start(args: list[str], slow_save: int = 0) -> subprocess.Popen:
    env = dict(ENV, SLOW_SAVE=str(slow_save))
    return subprocess.Popen([sys.executable, "-c", DRIVER, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def _weights(run: Path) -> dict:
    return safetensors.torch.load_file(str(run / "supernet.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    base = tmp_path_factory.mktemp("kill")
    (base / "config.yaml").write_text(yaml.safe_dump(small_config()))
    torch.set_num_threads(THREADS)
    train(small_config(), base / "reference", progress=False)
    return base, _weights(base / "reference")


def _resume_and_compare(run: Path, expected: dict) -> None:
    resumed = subprocess.run([sys.executable, "-m", "ofa.cli", "train", "--resume", str(run), "--quiet"],
                             capture_output=True, text=True, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    weights = _weights(run)
    assert weights.keys() == expected.keys()
    different = [k for k in expected if not (weights[k] == expected[k]).all()]
    assert not different, different[:5]


def test_killed_after_the_first_checkpoint_resumes_to_the_same_weights(reference):
    base, expected = reference
    run = base / "killed"
    proc = _start(["train", "--config", str(base / "config.yaml"), "--out", str(run), "--quiet"])
    deadline = time.time() + 300
    while not list((run / "checkpoints").glob("step*.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before its first checkpoint could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "supernet.safetensors").exists()
    _resume_and_compare(run, expected)


def test_killed_while_writing_a_checkpoint_resumes_to_the_same_weights(reference):
    base, expected = reference
    run = base / "killed_mid_write"
    proc = _start(["train", "--config", str(base / "config.yaml"), "--out", str(run), "--quiet"], slow_save=2)
    line = ""
    deadline = time.time() + 300
    while "WRITING" not in line and time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
    assert "WRITING" in line, "the second checkpoint write was never reached"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    assert leftovers, "the kill should have left a half-written temporary file"
    assert len(list((run / "checkpoints").glob("step*.pt"))) == 1  # only the complete one counts
    _resume_and_compare(run, expected)


def test_ctrl_c_inside_a_step_saves_that_step_and_resumes_to_the_same_weights(reference, monkeypatch, capsys):
    import train.trainer as trainer_module

    base, expected = reference
    run = base / "ctrl_c"
    real, calls = trainer_module.sandwich_backward, [0]

    def interrupted_in_the_middle(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 4:  # Ctrl-C lands while this step computes
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "sandwich_backward", interrupted_in_the_middle)
    with pytest.raises(KeyboardInterrupt):
        train(small_config(), run, progress=False)
    assert latest_checkpoint(run).name == "step000000004.pt"  # the interrupted step finished and was kept
    assert f"ofa train --resume {run}" in capsys.readouterr().err
    monkeypatch.setattr(trainer_module, "sandwich_backward", real)
    train(resume=run, progress=False)  # in this process (as the reference), its thread count from the config
    weights = _weights(run)
    assert [k for k in expected if not torch.equal(weights[k], expected[k])] == []
