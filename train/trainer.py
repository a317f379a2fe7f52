"""The training loop: progressive shrinking phases of sandwich steps, on accelerate, with exact resume.

``train(config, out)`` trains one supernet through every phase of a config and writes the run directory
(config.yaml, supernet.safetensors + supernet.json, metrics.csv, checkpoints/). ``train(resume=RUN)`` continues
from the last checkpoint so that the rest of the run is what it would have been without the interruption: the
batches, augmentations and sampled subnets are functions of (seed, epoch, index, step), not of process state.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import ofa
from ofa.data import load_data
from ofa.data.sources import UNREADABLE, check_images
from ofa.errors import OFAError
from ofa.io import atomic_write
from ofa.sorting import check_criterion
from ofa.timing import default_threads, num_threads

from .checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import phase_space, read_config, resolve_config, widens, write_config
from .guards import Interrupted, StopRequest, ThroughputWatch
from .metrics import MetricsLog
from .sandwich import sample_subnets, sandwich_backward
from .setup import build_supernet, make_accelerator, middle_arch, state_hash


class NonFiniteLossError(OFAError):
    """The loss became NaN or infinite; the run stopped and its last good checkpoint is untouched."""


@dataclass
class TrainResult:
    run_dir: Path
    supernet_path: Path
    global_step: int
    metrics: list[dict[str, Any]]
    is_main_process: bool = True
    skipped_images: list[str] = field(default_factory=list)  # unreadable files this process skipped


class Trainer:
    """One run: the config, the data, the supernet and the position in the schedule."""

    def __init__(self, config: dict[str, Any], run_dir: Path, resume: bool = False, progress: bool = True,
                 on_step: Callable[[Trainer], None] | None = None) -> None:
        self.config, self.run_dir, self.progress, self.on_step = config, run_dir, progress, on_step
        self.seed = int(config["seed"])
        torch.manual_seed(self.seed)
        d = config["data"]
        self.data = load_data(d["spec"], root=d["root"], seed=d["seed"], download=d["download"],
                              augment=d.get("augment"))
        if d.get("check_images"):
            check_images(self.data)
        self.net = build_supernet(config, self.data)
        self.net.data_config = copy.deepcopy(self.data.data_config)
        if config["channels_last"]:
            # Convolutions follow their weights' memory format; on a CPU the NHWC (mkldnn) depthwise backward is
            # several times faster than the NCHW one, which dominates a MobileNet step. Same math, other layout.
            self.net.to(memory_format=torch.channels_last)
        self.phases = config["phases"]
        self.spaces = [phase_space(self.net.space, p) for p in self.phases]  # checks every phase up front
        if any(widens(a, b) for a, b in zip(self.spaces, self.spaces[1:])):
            check_criterion(self.net, config["sort_criterion"])
        self.accelerator = make_accelerator(config, run_dir)
        self.main = self.accelerator.is_main_process
        self.resolution = max(self.net.space.resolutions)  # the loader's; subnets resize on the fly
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        self.steps_per_epoch = len(self.data.splits["train"][1]) // (config["batch_size"] * self.world)
        if config["max_steps_per_epoch"]:
            self.steps_per_epoch = min(self.steps_per_epoch, int(config["max_steps_per_epoch"]))
        if self.steps_per_epoch < 1:
            raise OFAError(f"the training split ({self.data.split_sizes['train']} images) is smaller than one "
                           f"global batch ({config['batch_size']} x {self.world} processes); lower batch_size")
        self.metrics = MetricsLog(run_dir / "metrics.csv", enabled=self.main)
        self.teacher: nn.Module | None = None
        self.sorted_phases: list[int] = []
        # where the run is; the epoch's running loss travels with it so a resumed epoch reports the same mean
        self.pos = {"phase": 0, "epoch": 0, "batch": 0, "global_step": 0, "phase_step": 0,
                    "loss_sum": 0.0, "loss_n": 0}
        self.subnet_log: list[list[str]] = []
        self.checkpoint: dict[str, Any] | None = None
        self._in_step = False
        self.throughput = ThroughputWatch(announce=self.main)
        self.stop = StopRequest(announce=self.main)
        path = latest_checkpoint(run_dir) if resume else None
        if resume and path is None:  # it stopped before its first checkpoint: that run is this run from step 0
            if self.main:
                print(f"note: {run_dir} has no checkpoint yet; starting it over with its config.yaml",
                      file=sys.stderr)
            self.metrics.truncate(0)
        if path is not None:
            self.checkpoint = load_checkpoint(path)
            self.checkpoint_path = path
            self._restore(self.checkpoint)
        elif "timm" in config and config["timm"].get("skip_first_phase"):
            if self.net.origin.get("checkpoint_path") and self._head_fits():
                self.pos["phase"] = 1
                self._make_teacher()
            elif self.main:
                print("note: timm.skip_first_phase ignored: the pretrained head does not fit the data's "
                      f"{self.data.num_classes} classes, so the first phase fine-tunes it", file=sys.stderr)
        self.model = self.accelerator.prepare_model(self.net)
        if config["log_with"]:
            hparams = {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))}
            self.accelerator.init_trackers("tensorboard", config=hparams)  # -> RUN/tensorboard/

    def _head_fits(self) -> bool:
        import safetensors.torch

        path, key = self.net.origin["checkpoint_path"], f"{self.net.classifier_name}.weight"
        try:
            head = safetensors.torch.load_file(path).get(key)
        except Exception:
            head = torch.load(path, map_location="cpu", weights_only=True).get(key)
        return head is not None and head.shape[0] == self.data.num_classes

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.net.load_state_dict(ckpt["model"])
        self.pos = dict(ckpt["position"])
        self.sorted_phases = list(ckpt["sorted_phases"])
        if ckpt.get("teacher") is not None:
            self._make_teacher(ckpt["teacher"])
        set_rng_state(ckpt["rng"])
        self.metrics.truncate(int(ckpt["metrics_rows"]))

    def _make_teacher(self, state: dict | None = None) -> None:
        if float(self.config["kd_ratio"]) <= 0:
            return
        teacher = copy.deepcopy(self.net)
        if state is not None:
            teacher.load_state_dict(state)
        teacher.set_active(teacher.space.largest())
        self.teacher = teacher.eval().requires_grad_(False).to(self.accelerator.device)

    # -- phases ------------------------------------------------------------------------------------------------
    def _start_phase(self, p: int):
        """Sort channels if this phase widens the width (once: recorded), then a fresh optimizer + scheduler."""
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2

        phase, cfg = self.phases[p], self.config
        if p > 0 and p not in self.sorted_phases and widens(self.spaces[p - 1], self.spaces[p]):
            batches = None
            if cfg["sort_criterion"] == "taylor":  # the same calibration images on every process
                batches = [(x.to(self.accelerator.device), y.to(self.accelerator.device))
                           for x, y in self.data.eval_loader("calib", self.resolution, batch_size=64, limit=256)]
            with torch.no_grad() if cfg["sort_criterion"] != "taylor" else torch.enable_grad():
                ofa.sort_channels(self.net, cfg["sort_criterion"], batches=batches)
            self.sorted_phases.append(p)
        opt_args = dict(cfg["optimizer"])
        optimizer = create_optimizer_v2(self.net, lr=float(phase["lr"]), **opt_args)
        sched_args = dict(cfg["scheduler"])
        scheduler, _ = create_scheduler_v2(optimizer, num_epochs=phase["epochs"],
                                           warmup_epochs=phase["warmup_epochs"], step_on_epochs=False,
                                           updates_per_epoch=self.steps_per_epoch, **sched_args)
        optimizer = self.accelerator.prepare_optimizer(optimizer)
        self.optimizer_phase = p
        return optimizer, scheduler

    def _checkpoint_state(self, optimizer, scheduler) -> dict[str, Any]:
        scaler = self.accelerator.scaler
        return {"model": self.net.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                "teacher": self.teacher.state_dict() if self.teacher is not None else None,
                "optimizer_phase": self.optimizer_phase, "position": dict(self.pos),
                "sorted_phases": list(self.sorted_phases), "rng": rng_state(),
                "metrics_rows": self.metrics.rows_written, "world_size": self.world}

    def _save(self, optimizer, scheduler) -> None:
        if self.main:
            self.checkpoint_path = save_checkpoint(self.run_dir, self.pos["global_step"],
                                                   self._checkpoint_state(optimizer, scheduler),
                                                   keep=self.config["keep_checkpoints"])
        self.accelerator.wait_for_everyone()

    # -- evaluation ------------------------------------------------------------------------------------------
    def evaluate_epoch(self, p: int, epoch: int, train_loss: float, lr: float, images_per_s: float) -> None:
        if not self.main:
            return
        space, ev = self.spaces[p], self.config["eval"]
        picks = [("largest", space.largest()), ("middle", middle_arch(space)), ("smallest", space.smallest())]
        seen, line = set(), []
        for label, arch in picks:
            if arch in seen:
                continue
            seen.add(arch)
            val = self.data.eval_loader("val", arch.resolution, batch_size=ev["batch_size"], limit=ev["val_images"])
            # Every subnet, the largest included, is measured with statistics re-estimated on the calibration
            # images: the stored ones are a running average over augmented training batches that lags the
            # weights; on ofa_mbv3_tiny they cost the largest 32 pp after 80 steps and ~1 pp at the end.
            with self.net.active(arch), ofa.calibrate_bn(self.net, self._calib_loader(arch.resolution)):
                m = ofa.evaluate(self.net, val)
            macs, _ = self.net.costs(arch)
            self.metrics.append({"phase": self.phases[p]["name"], "epoch": epoch + 1,
                                 "step": self.pos["global_step"], "subnet": label, "resolution": arch.resolution,
                                 "macs": macs, "val_loss": round(m.loss, 5), "val_top1": round(m.top1, 3),
                                 "ci_low": round(m.ci_low, 3), "ci_high": round(m.ci_high, 3),
                                 "train_loss": round(train_loss, 5), "lr": lr,
                                 "images_per_s": round(images_per_s, 1), "arch": arch.to_json()})
            self.accelerator.log({f"val_top1/{label}": m.top1, f"val_loss/{label}": m.loss},
                                 step=self.pos["global_step"])
            line.append(f"{label} {m.top1:.1f}%")
            chance = 100.0 / self.data.num_classes
            if epoch + 1 == self.phases[p]["epochs"] and m.at_chance(self.data.num_classes):
                tqdm.write(f"WARNING: the {label} subnet is at chance level after phase {self.phases[p]['name']!r}: "
                           f"validation top-1 {m.top1:.1f}% [95% interval {m.ci_low:.1f}, {m.ci_high:.1f}] "
                           f"contains {chance:.1f}% (1/{self.data.num_classes} classes). It is not learning: "
                           "check the labels, lower the phase's lr or train longer", file=sys.stderr)
        if self.progress:
            phase = self.phases[p]
            tqdm.write(f"{phase['name']} {epoch + 1}/{phase['epochs']} (step {self.pos['global_step']}): "
                       f"validation top-1 {', '.join(line)}; train loss {train_loss:.3f}, "
                       f"{images_per_s:.0f} images/s")

    def _calib_loader(self, resolution: int):
        ev = self.config["eval"]
        return self.data.eval_loader("calib", resolution, batch_size=ev["batch_size"], limit=ev["calib_images"])

    # -- the loop --------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        with self.stop:
            return self._run()

    def _run(self) -> TrainResult:
        cfg, acc = self.config, self.accelerator
        bs = cfg["batch_size"]
        resumed = self.checkpoint is not None
        while self.pos["phase"] < len(self.phases):
            p = self.pos["phase"]
            phase = self.phases[p]
            optimizer, scheduler = self._start_phase(p)
            if resumed and self.checkpoint["optimizer_phase"] == p:
                optimizer.load_state_dict(self.checkpoint["optimizer"])
                scheduler.load_state_dict(self.checkpoint["scheduler"])
                if acc.scaler is not None and self.checkpoint.get("scaler"):
                    acc.scaler.load_state_dict(self.checkpoint["scaler"])
            resumed = False
            self.model.train()
            while self.pos["phase"] == p and self.pos["epoch"] < phase["epochs"]:
                epoch = self.pos["epoch"]
                data_epoch = sum(ph["epochs"] for ph in self.phases[:p]) + epoch  # a new order every epoch
                loader = self.data.train_loader(self.resolution, bs, seed=self.seed, epoch=data_epoch,
                                                rank=self.rank, world=self.world, start=self.pos["batch"],
                                                num_workers=cfg["num_workers"], augment=cfg["augment"])
                bar = tqdm(total=self.steps_per_epoch, initial=self.pos["batch"], leave=False, dynamic_ncols=True,
                           desc=f"{phase['name']} {epoch + 1}/{phase['epochs']}",
                           disable=not (self.progress and self.main))
                t0, images = time.perf_counter(), 0
                self.throughput.start()
                try:
                    for images_batch, labels in loader:
                        if self.pos["batch"] >= self.steps_per_epoch:
                            break
                        self._in_step = True
                        loss = self._step(p, optimizer, scheduler, images_batch, labels)
                        self.pos["loss_sum"] += loss
                        self.pos["loss_n"] += 1
                        self._in_step = False
                        images += len(labels) * self.world
                        bar.update(1)
                        acc.log({"train/loss": loss, "train/lr": optimizer.param_groups[0]["lr"]},
                                step=self.pos["global_step"])  # a no-op without log_with
                        bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{images / max(time.perf_counter() - t0, 1e-9):.0f}")
                        if self.pos["global_step"] % cfg["checkpoint_every"] == 0 \
                                and self.pos["batch"] < self.steps_per_epoch:
                            self._save(optimizer, scheduler)
                        if self.on_step is not None:
                            self.on_step(self)
                        self._stop_if_asked(optimizer, scheduler)
                except KeyboardInterrupt as e:
                    # A second Ctrl-C (or one before the handler was installed) between two steps: the state is
                    # consistent, keep the work. Inside a step the last checkpoint stands.
                    if not isinstance(e, Interrupted) and not self._in_step and self.world == 1:
                        self._save(optimizer, scheduler)
                    raise
                bar.close()
                lr = optimizer.param_groups[0]["lr"]
                train_loss = self.pos["loss_sum"] / max(self.pos["loss_n"], 1)
                self.pos.update(epoch=self.pos["epoch"] + 1, batch=0, loss_sum=0.0, loss_n=0)
                images_per_s = images / max(time.perf_counter() - t0, 1e-9)
                self.throughput.update(p, images_per_s)
                self.evaluate_epoch(p, epoch, train_loss, lr, images_per_s)
                if self.pos["epoch"] == phase["epochs"]:
                    self._end_phase(p)
                self._save(optimizer, scheduler)
                if self.pos["phase"] < len(self.phases):
                    self._stop_if_asked(optimizer, scheduler, saved=True)
        return self._finish()

    def _stop_if_asked(self, optimizer, scheduler, saved: bool = False) -> None:
        reduce = (lambda t: self.accelerator.reduce(t, reduction="sum")) if self.world > 1 else None
        if self.stop.agreed(reduce, self.accelerator.device):
            if not saved:
                self._save(optimizer, scheduler)
            raise Interrupted(f"stopped at step {self.pos['global_step']} with a checkpoint")

    def _end_phase(self, p: int) -> None:
        if p == 0 and self.teacher is None:
            self._make_teacher()  # the full network, frozen, teaches every later phase
        self.pos.update(phase=p + 1, epoch=0, batch=0, phase_step=0)

    def _step(self, p: int, optimizer, scheduler, images: torch.Tensor, labels: torch.Tensor) -> float:
        cfg, acc = self.config, self.accelerator
        images, labels = images.to(acc.device), labels.to(acc.device)
        archs = sample_subnets(self.spaces[p], self.seed, self.pos["global_step"], self.phases[p]["num_random"])
        if cfg["log_subnets"]:
            self.subnet_log.append([a.key() for a in archs])
        with acc.accumulate(self.model):
            result = sandwich_backward(self.model, self.net, archs, images, labels,
                                       label_smoothing=float(cfg["label_smoothing"]), teacher=self.teacher,
                                       kd_ratio=float(cfg["kd_ratio"]), temperature=float(cfg["kd_temperature"]),
                                       accelerator=acc)
            total = result.total
            if self.world > 1:  # every process must agree to stop
                total = acc.reduce(total, reduction="mean")
            if not math.isfinite(float(total)):
                optimizer.zero_grad(set_to_none=True)
                where = (f"phase {self.phases[p]['name']!r}, epoch {self.pos['epoch'] + 1}, "
                         f"step {self.pos['global_step'] + 1}")
                last = getattr(self, "checkpoint_path", None)
                raise NonFiniteLossError(
                    f"the loss became {float(total)} at {where} (subnets {[a.key() for a in archs]}); stopped "
                    f"without writing anything; last good checkpoint: {last or 'none yet'}. Lower that phase's "
                    f"lr, add warmup_epochs, or use mixed_precision: no, then resume with `ofa train --resume "
                    f"{self.run_dir}`")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        self.pos["batch"] += 1
        self.pos["global_step"] += 1
        self.pos["phase_step"] += 1
        scheduler.step_update(num_updates=self.pos["phase_step"])
        return float(total)

    def _finish(self) -> TrainResult:
        acc = self.accelerator
        largest = self.net.space.largest()
        self.net.set_active(largest)
        # The stored statistics (the largest arch's) are re-estimated on the calibration images, as evaluation
        # does, so the saved supernet's largest arch runs as it was measured (same images on every process).
        ofa.calibrate_bn(self.net, self._calib_loader(largest.resolution))
        self.net.data_config = copy.deepcopy(self.data.data_config)
        weights = self.run_dir / "supernet.safetensors"
        if self.main:
            ofa.save(self.net, weights)
        params_hash = state_hash(self.net, params_only=True)
        if self.world > 1:
            # Each process updated the largest arch's BN statistics on its own images (DDP broadcasts them
            # from process 0 only at the next forward): take process 0's, so every process ends identical.
            import torch.distributed as dist

            for buffer in self.net.buffers():
                dist.broadcast(buffer.data, src=0)
        if self.config["log_subnets"]:
            log = {"rank": self.rank, "world_size": self.world, "final_weights_sha256": state_hash(self.net),
                   "final_parameters_sha256": params_hash,
                   "subnets": self.subnet_log}
            path = self.run_dir / "logs" / f"rank{self.rank}.json"
            atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(log)))
        acc.wait_for_everyone()
        acc.end_training()
        return TrainResult(self.run_dir, weights, self.pos["global_step"], self.metrics.read() if self.main else [],
                           self.main, sorted(UNREADABLE))


def train(config: dict[str, Any] | str | os.PathLike | None = None, out: str | os.PathLike | None = None,
          resume: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None, progress: bool = True,
          on_step: Callable[[Trainer], None] | None = None) -> TrainResult:
    """Train a supernet through every phase of ``config`` into the run directory ``out``; or, with
    ``resume=RUN``, continue RUN from its last checkpoint (with RUN's own config.yaml).

    ``overrides`` replaces top-level config entries (e.g. ``{"mixed_precision": "bf16"}``). ``on_step`` is called
    after every optimizer step with the Trainer (``.pos``: phase, epoch, batch, global_step; ``.net``).
    """
    if resume is not None:
        run_dir = Path(resume)
        if config is not None:
            raise OFAError("--resume continues a run with its own config.yaml; do not pass --config as well")
        if not (run_dir / "config.yaml").is_file():
            raise OFAError(f"{run_dir} is not a run directory (no config.yaml); start a run with --config and --out")
        raw = read_config(run_dir / "config.yaml")
        if "timm" in raw:
            raw.pop("supernet", None)  # recorded for readers; the run is rebuilt from its timm entry
    else:
        if config is None or out is None:
            raise OFAError("give --config CONFIG and --out RUN (or --resume RUN)")
        raw = read_config(config) if not isinstance(config, dict) else copy.deepcopy(config)
        run_dir = Path(out)
        if (run_dir / "config.yaml").exists() or (run_dir / "checkpoints").exists():
            raise OFAError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose "
                           "another --out")
    if overrides:
        raw.update({k: v for k, v in overrides.items() if v is not None})
    resolved = resolve_config(raw)
    resolved["threads"] = resolved["threads"] or default_threads()  # fixed for the run, recorded in config.yaml
    with num_threads(resolved["threads"]):
        trainer = Trainer(resolved, run_dir, resume=resume is not None, progress=progress, on_step=on_step)
        if resume is None and trainer.main:
            write_config(run_dir, resolved, trainer.net)
        trainer.accelerator.wait_for_everyone()
        try:
            return trainer.run()
        except KeyboardInterrupt:
            if trainer.main:
                print(f"interrupted; the last checkpoint is in {run_dir / 'checkpoints'}: continue with "
                      f"`ofa train --resume {run_dir}`", file=sys.stderr)
            raise
