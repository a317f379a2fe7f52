"""train: the whole tiny schedule, sandwich semantics, exact resume, non-finite loss, clear errors."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
import yaml

import ofa
from ofa import OFAError
from ofa.cli import main as cli_main
from ofa.data import load_run_data
from train.config import phase_space, read_config, resolve_config
from train.sandwich import sample_subnets, sandwich_backward, soft_kl
from train.trainer import NonFiniteLossError, train

CONFIG = Path(__file__).resolve().parent.parent / "ofa" / "configs" / "tiny_cpu.yaml"


def small_config(**changes) -> dict:
    """The shipped tiny config, shrunk to a few steps per phase on small batches, with the frozen teacher on."""
    config = read_config(CONFIG)
    config.update(kd_ratio=1.0, batch_size=16, max_steps_per_epoch=2, num_random=1, checkpoint_every=2,
                  eval={"calib_images": 32, "val_images": 48, "batch_size": 48})
    for phase in config["phases"]:
        phase["epochs"] = 1
        phase["warmup_epochs"] = 0
    config.update(changes)
    return config


def test_whole_tiny_schedule_writes_the_run_directory(tmp_path):
    run = tmp_path / "run"
    result = train(small_config(), run, progress=False)
    phases = [p["name"] for p in read_config(CONFIG)["phases"]]
    assert result.global_step == 2 * len(phases)
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert recorded["supernet"]["name"] == "ofa_resnet_tiny" and recorded["supernet"]["num_classes"] == 10
    assert recorded["data"]["spec"] == "mnist5k"
    assert isinstance(recorded["threads"], int) and recorded["threads"] >= 1  # fixed at start, recorded
    assert [r["phase"] for r in result.metrics][::3] == phases  # largest, middle, smallest per epoch
    assert {r["subnet"] for r in result.metrics} == {"largest", "middle", "smallest"}
    assert all(0.0 <= float(r["val_top1"]) <= 100.0 for r in result.metrics)
    net = ofa.load(run / "supernet.safetensors")
    assert net.data_config == load_run_data(run).data_config  # the one eval preprocessing travels with it
    assert len(list((run / "checkpoints").glob("step*.pt"))) == 2  # the last two kept
    ckpt = torch.load(sorted((run / "checkpoints").glob("step*.pt"))[-1], weights_only=True)
    assert ckpt["sorted_phases"] == [2, 3]  # channel sorting before the expand and the width phase
    smallest = net.space.smallest()
    with net.active(smallest):
        assert net(torch.randn(2, 1, smallest.resolution, smallest.resolution)).shape == (2, 10)


def test_subnets_depend_only_on_seed_and_step(tiny):
    space = phase_space(tiny.space, resolve_config(small_config())["phases"][3])
    a = sample_subnets(space, seed=0, global_step=7, num_random=2)
    assert a == sample_subnets(space, seed=0, global_step=7, num_random=2)
    assert a[0] == space.largest() and a[1] == space.smallest() and len(a) == 4
    assert any(sample_subnets(space, 0, s, 2)[2:] != a[2:] for s in range(8, 12))
    full_only = phase_space(tiny.space, {"name": "x", "space": {}})
    assert sample_subnets(full_only, 0, 0, 2) == [tiny.space.largest()]


def test_sandwich_step_losses_and_accumulated_gradients(tiny):
    torch.manual_seed(0)
    tiny.train()
    archs = sample_subnets(tiny.space, seed=1, global_step=0, num_random=1)
    x, y = torch.randn(6, 1, 32, 32), torch.randint(0, 10, (6,))
    result = sandwich_backward(tiny, tiny, archs, x, y, label_smoothing=0.1)
    together = {n: p.grad.clone() for n, p in tiny.named_parameters() if p.grad is not None}
    assert tiny.active_arch == archs[0] and len(result.losses) == len(archs) == 3
    # the same losses and gradients, computed one subnet at a time by hand
    tiny.zero_grad()
    with torch.no_grad(), tiny.active(archs[0]):
        target = tiny(x)
    summed: dict[str, torch.Tensor] = {}
    for i, arch in enumerate(archs):
        tiny.zero_grad()
        with tiny.active(arch):
            logits = tiny(F.interpolate(x, size=arch.resolution, mode="bilinear", antialias=True))
        loss = F.cross_entropy(logits, y, label_smoothing=0.1) if i == 0 else soft_kl(logits, target)
        assert torch.allclose(loss, result.losses[i], atol=1e-5)
        loss.backward()
        for n, p in tiny.named_parameters():
            if p.grad is not None:
                summed[n] = summed.get(n, 0) + p.grad
    assert set(summed) == set(together)
    for n in summed:
        assert torch.allclose(summed[n], together[n], atol=1e-5), n
    # the smallest subnet contributed: the first channels of the last stage's conv got gradient from all three
    assert result.losses[1] > 0 and result.losses[2] > 0


def test_one_optimizer_step_per_batch(tmp_path, monkeypatch):
    calls = []
    original = torch.optim.SGD.step

    def counting_step(self, *a, **k):
        calls.append(1)
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", counting_step)
    config = small_config(phases=[{"name": "all", "epochs": 1, "lr": 0.01, "resolutions": "all",
                                   "depths": "all", "widths": "all", "expands": "all", "stem": "all"}])
    result = train(config, tmp_path / "run", progress=False)
    assert result.global_step == 2 and len(calls) == 2


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    # cpu: bit-identity is the CPU promise (see test_kill_resume.py)
    config = small_config(num_workers=2, max_steps_per_epoch=3, kd_ratio=0.5, cpu=True)
    config["phases"] = [config["phases"][0], config["phases"][2]]  # full (teacher), then expand (sorting)
    straight = train(copy.deepcopy(config), tmp_path / "straight", progress=False)

    def interrupt(trainer):
        if trainer.pos["global_step"] == 5:  # mid-way through the second phase, between periodic checkpoints
            raise KeyboardInterrupt  # as Ctrl-C would

    with pytest.raises(KeyboardInterrupt):
        train(copy.deepcopy(config), tmp_path / "resumed", progress=False, on_step=interrupt)
    saved = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").glob("step*.pt"))
    assert saved == ["step000000004.pt", "step000000005.pt"]  # the interruption kept the work since step 4
    assert not (tmp_path / "resumed" / "supernet.safetensors").exists()
    resumed = train(resume=tmp_path / "resumed", progress=False)
    assert resumed.global_step == straight.global_step == 6
    a = ofa.load(tmp_path / "straight" / "supernet.safetensors").state_dict()
    b = ofa.load(tmp_path / "resumed" / "supernet.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    def rows(result):  # every evaluation once, with the same numbers (throughput aside)
        return [{k: v for k, v in r.items() if k != "images_per_s"} for r in result.metrics]

    assert rows(resumed) == rows(straight)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    config = small_config(phases=[{"name": "full", "epochs": 1, "lr": 0.01}], max_steps_per_epoch=4)
    run = tmp_path / "run"

    def poison(trainer):
        if trainer.pos["global_step"] == 2:  # right after the step-2 checkpoint
            with torch.no_grad():
                for p in trainer.net.parameters():
                    p.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match="loss became nan.*last good checkpoint.*step000000002"):
        train(config, run, progress=False, on_step=poison)
    ckpts = sorted((run / "checkpoints").glob("step*.pt"))
    assert [c.name for c in ckpts] == ["step000000002.pt"]
    state = torch.load(ckpts[0], weights_only=True)
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not (run / "supernet.safetensors").exists()


def test_clear_errors(tmp_path, capsys):
    with pytest.raises(OFAError, match="unknown supernet 'ofa_nope'"):
        train(small_config(supernet={"name": "ofa_nope"}), tmp_path / "a", progress=False)
    with pytest.raises(OFAError, match="data path .*missing.* does not exist"):
        train(small_config(data={"spec": f"imagefolder:{tmp_path / 'missing'}"}), tmp_path / "b", progress=False)
    bad = small_config()
    bad["phases"][1]["depths"] = [1, 5]
    with pytest.raises(OFAError, match=r"phase 'depth': depths value 5 is not in the space; allowed: \[1, 2\]"):
        train(bad, tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / "config.yaml").exists()
    with pytest.raises(OFAError, match="has no checkpoint|not a run directory"):
        train(resume=tmp_path / "c", progress=False)
    config_path = tmp_path / "bad.yaml"
    config_path.write_text(yaml.safe_dump(bad))
    assert cli_main(["train", "--config", str(config_path), "--out", str(tmp_path / "d")]) == 2
    assert "error: phase 'depth'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["tiny_cpu.yaml", "resnet50_imagenet.yaml"])
def test_shipped_configs_resolve_against_their_supernets(name):
    from ofa.registry import supernet_entry

    config = resolve_config(read_config(CONFIG.parent / name))
    cls, defaults = supernet_entry(config["supernet"]["name"])
    space = cls.make_plan(**defaults).space
    sizes = [phase_space(space, phase).size() for phase in config["phases"]]
    assert sizes == sorted(sizes) and sizes[-1] == space.size()  # from the full network to the whole space


def test_tensorboard_logs_losses_and_validation_accuracy(tmp_path):
    pytest.importorskip("tensorboard")  # a dev dependency; the feature is an optional extra
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = small_config(phases=[{"name": "full", "epochs": 1, "lr": 0.05}], log_with="tensorboard")
    train(config, tmp_path / "run", progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "val_top1/largest"} <= set(tags)
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    top1 = events.Scalars("val_top1/largest")[0].value
    metrics = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert abs(top1 - float(metrics[1].split(",")[metrics[0].split(",").index("val_top1")])) < 1e-3


def test_tensorboard_is_rejected_clearly_when_misspelt(tmp_path):
    with pytest.raises(OFAError, match="log_with must be null or tensorboard"):
        train(small_config(log_with="tensorbaord"), tmp_path / "run", progress=False)


def test_bf16_training_runs_on_cpu_in_its_own_process(tmp_path):
    config = small_config(phases=[{"name": "full", "epochs": 1, "lr": 0.05}])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "ofa.cli", "train", "--config", str(tmp_path / "c.yaml"), "--out",
                           str(tmp_path / "run"), "--mixed-precision", "bf16", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["mixed_precision"] == "bf16"
    net = ofa.load(tmp_path / "run" / "supernet.safetensors")
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in net.parameters())


def test_a_second_precision_in_one_process_is_a_clear_error(tmp_path):
    config = small_config(phases=[{"name": "full", "epochs": 1, "lr": 0.05}])
    train(copy.deepcopy(config), tmp_path / "a", progress=False)  # the process's state: no mixed precision
    with pytest.raises(OFAError, match="accelerate allows one setting per process"):
        train(dict(config, mixed_precision="bf16"), tmp_path / "b", progress=False)
    assert not (tmp_path / "b").exists()  # nothing half-written


def test_a_phase_can_sample_more_random_subnets(tmp_path):
    config = read_config(CONFIG)
    phases = [dict(config["phases"][0], epochs=1, warmup_epochs=0, resolutions="all"),  # >1 subnet: sandwich
              dict(config["phases"][-1], epochs=1, warmup_epochs=0, num_random=3)]  # once-for-all: more later
    train(small_config(phases=phases, num_random=1, log_subnets=True), tmp_path / "run", progress=False)
    log = json.loads((tmp_path / "run" / "logs" / "rank0.json").read_text())
    assert [len(step) for step in log["subnets"]] == [3, 3, 5, 5]  # largest + smallest + num_random


@pytest.mark.parametrize("model", ["resnet18", "mobilenetv3_large_100"])
def test_skip_first_phase_with_a_pretrained_head_that_fits(tmp_path, model):
    import safetensors.torch
    import timm

    from train.trainer import Trainer

    checkpoint = tmp_path / f"{model}.safetensors"
    safetensors.torch.save_file(timm.create_model(model, num_classes=10, in_chans=1).state_dict(), checkpoint)
    config = small_config(timm={"name": model, "checkpoint_path": str(checkpoint), "skip_first_phase": True},
                          phases=[{"name": "full", "epochs": 1, "lr": 0.1}, {"name": "depth", "epochs": 1, "lr": 0.1, "depths": "all"}])
    del config["supernet"]
    trainer = Trainer(resolve_config(config), tmp_path / "run", progress=False)
    assert trainer.pos["phase"] == 1  # the fitted head is kept: training starts at the second phase


@pytest.mark.parametrize("wrap", ["state_dict", "module."])
def test_skip_first_phase_reads_the_checkpoint_as_the_importer_does(tmp_path, wrap):
    # A training script's checkpoint ({"state_dict": ...}) or a DDP one ("module." keys) builds the supernet (timm's
    # loader unwraps both); the head check must read it the same way, not look the raw file up by key.
    import timm

    from train.trainer import Trainer

    state = timm.create_model("mobilenetv3_large_100", pretrained=False, num_classes=10, in_chans=1).state_dict()
    state = {"state_dict": state} if wrap == "state_dict" else {f"module.{k}": v for k, v in state.items()}
    checkpoint = tmp_path / "mbv3.pth"
    torch.save(state, checkpoint)
    config = small_config(timm={"name": "mobilenetv3_large_100", "checkpoint_path": str(checkpoint),
                                "skip_first_phase": True},
                          phases=[{"name": "full", "epochs": 1, "lr": 0.1}, {"name": "depth", "epochs": 1, "lr": 0.1, "depths": "all"}])
    del config["supernet"]
    trainer = Trainer(resolve_config(config), tmp_path / "run", progress=False)
    assert trainer.pos["phase"] == 1


def test_a_run_that_crashed_before_its_first_checkpoint_resumes_from_the_start(tmp_path):
    config = small_config(phases=[{"name": "full", "epochs": 1, "lr": 0.05}], checkpoint_every=50)
    reference = train(copy.deepcopy(config), tmp_path / "reference", progress=False)

    def crash(trainer):
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train(copy.deepcopy(config), tmp_path / "crashed", progress=False, on_step=crash)
    assert not list((tmp_path / "crashed" / "checkpoints").glob("step*.pt"))  # not resumable the old way
    resumed = train(resume=tmp_path / "crashed", progress=False)
    assert resumed.global_step == reference.global_step
    assert [r["val_top1"] for r in resumed.metrics] == [r["val_top1"] for r in reference.metrics]
    a = safetensors.torch.load_file(str(reference.supernet_path))
    b = safetensors.torch.load_file(str(resumed.supernet_path))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_subnet_left_at_chance_is_a_loud_warning_with_the_validation_lines(tmp_path, capsys):
    config = small_config(phases=[{"name": "full", "epochs": 1, "lr": 1e-12}])  # learns nothing
    train(config, tmp_path / "run", progress=True)
    out, err = capsys.readouterr()
    assert "full 1/1 (step 2): validation top-1 largest" in out
    assert "WARNING: the largest subnet is at chance level after phase 'full'" in err
