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
from ofa.rundir import RunDir
from ofa.sorting import check_criterion
from ofa.timing import default_threads, num_threads

from .checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig, phase_space, run_config, widens, write_config
from .evaluation import calib_loader, evaluate_subnets
from .guards import Interrupted, StopRequest, ThroughputWatch
from .metrics import MetricsLog
from .position import Position
from .sandwich import sample_subnets, sandwich_backward
from .setup import build_supernet, make_accelerator, make_optimizer, state_hash


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

    def __init__(self, config: TrainConfig | dict[str, Any], run_dir: Path, resume: bool = False,
                 progress: bool = True, on_step: Callable[[Trainer], None] | None = None) -> None:
        config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        self.config, self.run_dir, self.progress, self.on_step = config, run_dir, progress, on_step
        self.seed = int(config.seed)
        torch.manual_seed(self.seed)
        d = config.data
        self.data = load_data(d.spec, root=d.root, seed=d.seed, download=d.download, augment=d.augment)
        if d.check_images:
            check_images(self.data)
        self.net = build_supernet(config, self.data)
        self.net.data_config = copy.deepcopy(self.data.data_config)
        if config.channels_last:
            # Convolutions follow their weights' memory format; on a CPU the NHWC (mkldnn) depthwise backward is
            # several times faster than the NCHW one, which dominates a MobileNet step. Same math, other layout.
            self.net.to(memory_format=torch.channels_last)
        self.phases = config.phases
        self.spaces = [phase_space(self.net.space, p) for p in self.phases]  # checks every phase up front
        if any(widens(a, b) for a, b in zip(self.spaces, self.spaces[1:])):
            check_criterion(self.net, config.sort_criterion)
        self.accelerator = make_accelerator(config, run_dir)
        self.main = self.accelerator.is_main_process
        self.resolution = max(self.net.space.resolutions)  # the loader's; subnets resize on the fly
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        self.steps_per_epoch = len(self.data.splits["train"][1]) // (config.batch_size * self.world)
        if config.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, int(config.max_steps_per_epoch))
        if self.steps_per_epoch < 1:
            raise OFAError(f"the training split ({self.data.split_sizes['train']} images) is smaller than one "
                           f"global batch ({config.batch_size} x {self.world} processes); lower batch_size")
        self.metrics = MetricsLog(RunDir(run_dir).metrics, enabled=self.main)
        self.teacher: nn.Module | None = None
        self.sorted_phases: list[int] = []
        self.pos = Position()
        self.subnet_log: list[list[str]] = []
        self.checkpoint: dict[str, Any] | None = None
        self._in_step = False
        self.throughput = ThroughputWatch(announce=self.main)
        self.stop = StopRequest(announce=self.main)
        self._start_where(resume)
        self._resume = self.checkpoint  # its optimizer state, until the phase it was saved in starts
        self.model = self.accelerator.prepare_model(self.net)
        if config.log_with:
            hparams = {k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool))}
            self.accelerator.init_trackers("tensorboard", config=hparams)  # -> RUN/tensorboard/

    def _start_where(self, resume: bool) -> None:
        """The position to start from: the last checkpoint's, step 0, or the second phase after a fitted timm
        head."""
        path = latest_checkpoint(self.run_dir) if resume else None
        if resume and path is None:  # it stopped before its first checkpoint: that run is this run from step 0
            if self.main:
                print(f"note: {self.run_dir} has no checkpoint yet; starting it over with its config.yaml",
                      file=sys.stderr)
            self.metrics.truncate(0)
        if path is not None:
            self.checkpoint = load_checkpoint(path)
            self.checkpoint_path = path
            self._restore(self.checkpoint)
        elif self.config.timm is not None and self.config.timm.get("skip_first_phase"):
            if self.net.origin.get("checkpoint_path") and self._head_fits():
                self.pos.phase = 1
                self._make_teacher()
            elif self.main:
                print("note: timm.skip_first_phase ignored: the pretrained head does not fit the data's "
                      f"{self.data.num_classes} classes, so the first phase fine-tunes it", file=sys.stderr)

    def _head_fits(self) -> bool:
        """Whether the timm checkpoint's classifier already has the data's classes. It is read as the importer
        read it (timm's loader unwraps ``state_dict``/``model`` entries and DDP's ``module.`` prefix); the head is
        the family's classifier, which its timm models name alike (``fc``, ``classifier``, ``head``)."""
        from timm.models import load_state_dict

        state = load_state_dict(self.net.origin["checkpoint_path"], weights_only=True)
        head = state.get(f"{self.net.classifier_name}.weight")
        return head is not None and head.shape[0] == self.data.num_classes

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.net.load_state_dict(ckpt["model"])
        self.pos = Position.from_dict(ckpt["position"])
        self.sorted_phases = list(ckpt["sorted_phases"])
        if ckpt.get("teacher") is not None:
            self._make_teacher(ckpt["teacher"])
        set_rng_state(ckpt["rng"])
        self.metrics.truncate(int(ckpt["metrics_rows"]))

    def _make_teacher(self, state: dict | None = None) -> None:
        if float(self.config.kd_ratio) <= 0:
            return
        teacher = copy.deepcopy(self.net)
        if state is not None:
            teacher.load_state_dict(state)
        teacher.set_active(teacher.space.largest())
        self.teacher = teacher.eval().requires_grad_(False).to(self.accelerator.device)

    # -- the loop: phase -> epoch -> step ---------------------------------------------------------------------
    def run(self) -> TrainResult:
        with self.stop:
            while self.pos.phase < len(self.phases):
                self._run_phase(self.pos.phase)
            return self._finish()

    def _run_phase(self, p: int) -> None:
        optimizer, scheduler = self._start_phase(p)
        self.model.train()
        while self.pos.phase == p:  # the phase's last epoch moves the position on to the next phase
            self._run_epoch(p, optimizer, scheduler)

    def _run_epoch(self, p: int, optimizer, scheduler) -> None:
        cfg, phase, epoch = self.config, self.phases[p], self.pos.epoch
        data_epoch = sum(ph.epochs for ph in self.phases[:p]) + epoch  # a new order every epoch
        loader = self.data.train_loader(self.resolution, cfg.batch_size, seed=self.seed, epoch=data_epoch,
                                        rank=self.rank, world=self.world, start=self.pos.batch,
                                        num_workers=cfg.num_workers, augment=cfg.augment)
        bar = tqdm(total=self.steps_per_epoch, initial=self.pos.batch, leave=False, dynamic_ncols=True,
                   desc=f"{phase.name} {epoch + 1}/{phase.epochs}", disable=not (self.progress and self.main))
        t0, images = time.perf_counter(), 0
        self.throughput.start()
        try:
            for batch, labels in loader:
                if self.pos.batch >= self.steps_per_epoch:
                    break
                loss = self._step(p, optimizer, scheduler, batch, labels)
                images += len(labels) * self.world
                bar.update(1)
                self.accelerator.log({"train/loss": loss, "train/lr": optimizer.param_groups[0]["lr"]},
                                     step=self.pos.global_step)  # a no-op without log_with
                bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{images / max(time.perf_counter() - t0, 1e-9):.0f}")
                if self.pos.global_step % cfg.checkpoint_every == 0 and self.pos.batch < self.steps_per_epoch:
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
        self._end_epoch(p, optimizer, scheduler, images / max(time.perf_counter() - t0, 1e-9))

    def _end_epoch(self, p: int, optimizer, scheduler, images_per_s: float) -> None:
        """Evaluate, move on (to the next phase after the last epoch) and save; the one place a run may stop
        without a step in between."""
        epoch, lr, train_loss = self.pos.epoch, optimizer.param_groups[0]["lr"], self.pos.mean_loss
        self.pos.next_epoch()
        self.throughput.update(p, images_per_s)
        self.evaluate_epoch(p, epoch, train_loss, lr, images_per_s)
        if self.pos.epoch == self.phases[p].epochs:
            self._end_phase(p)
        self._save(optimizer, scheduler)
        if self.pos.phase < len(self.phases):
            self._stop_if_asked(optimizer, scheduler, saved=True)

    def _end_phase(self, p: int) -> None:
        if p == 0 and self.teacher is None:
            self._make_teacher()  # the full network, frozen, teaches every later phase
        self.pos.next_phase()

    def _step(self, p: int, optimizer, scheduler, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One optimizer step on one batch: the sandwich of subnets this step samples, then the schedule."""
        cfg, acc = self.config, self.accelerator
        self._in_step = True  # until it returns, a Ctrl-C leaves the last checkpoint standing
        images, labels = images.to(acc.device), labels.to(acc.device)
        archs = sample_subnets(self.spaces[p], self.seed, self.pos.global_step, self.phases[p].num_random)
        if cfg.log_subnets:
            self.subnet_log.append([a.key() for a in archs])
        with acc.accumulate(self.model):
            result = sandwich_backward(self.model, self.net, archs, images, labels,
                                       label_smoothing=float(cfg.label_smoothing), teacher=self.teacher,
                                       kd_ratio=float(cfg.kd_ratio), temperature=float(cfg.kd_temperature),
                                       accelerator=acc)
            total = result.total
            if self.world > 1:  # every process must agree to stop
                total = acc.reduce(total, reduction="mean")
            if not math.isfinite(float(total)):
                optimizer.zero_grad(set_to_none=True)
                raise self._non_finite(p, float(total), archs)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        self.pos.stepped()
        scheduler.step_update(num_updates=self.pos.phase_step)
        self.pos.add_loss(float(total))
        self._in_step = False
        return float(total)

    def _non_finite(self, p: int, total: float, archs: list) -> NonFiniteLossError:
        where = f"phase {self.phases[p].name!r}, epoch {self.pos.epoch + 1}, step {self.pos.global_step + 1}"
        last = getattr(self, "checkpoint_path", None)
        return NonFiniteLossError(
            f"the loss became {total} at {where} (subnets {[a.key() for a in archs]}); stopped without writing "
            f"anything; last good checkpoint: {last or 'none yet'}. Lower that phase's lr, add warmup_epochs, or "
            f"use mixed_precision: no, then resume with `ofa train --resume {self.run_dir}`")

    def _stop_if_asked(self, optimizer, scheduler, saved: bool = False) -> None:
        reduce = (lambda t: self.accelerator.reduce(t, reduction="sum")) if self.world > 1 else None
        if self.stop.agreed(reduce, self.accelerator.device):
            if not saved:
                self._save(optimizer, scheduler)
            raise Interrupted(f"stopped at step {self.pos.global_step} with a checkpoint")

    # -- a phase's start, checkpoints ------------------------------------------------------------------------
    def _start_phase(self, p: int):
        """Sort channels if this phase widens the width (once: recorded), then a fresh optimizer + scheduler, or
        the checkpoint's when a resumed run continues inside this phase."""
        if p > 0 and p not in self.sorted_phases and widens(self.spaces[p - 1], self.spaces[p]):
            self._sort_channels()
            self.sorted_phases.append(p)
        optimizer, scheduler = make_optimizer(self.net, self.config, self.phases[p], self.steps_per_epoch)
        optimizer = self.accelerator.prepare_optimizer(optimizer)
        self.optimizer_phase = p
        resumed, self._resume = self._resume, None  # only the first phase after a resume may continue its state
        if resumed is not None and resumed["optimizer_phase"] == p:
            optimizer.load_state_dict(resumed["optimizer"])
            scheduler.load_state_dict(resumed["scheduler"])
            if self.accelerator.scaler is not None and resumed.get("scaler"):
                self.accelerator.scaler.load_state_dict(resumed["scaler"])
        return optimizer, scheduler

    def _sort_channels(self) -> None:
        criterion, device = self.config.sort_criterion, self.accelerator.device
        batches = None
        if criterion == "taylor":  # the same calibration images on every process
            batches = [(x.to(device), y.to(device))
                       for x, y in self.data.eval_loader("calib", self.resolution, batch_size=64, limit=256)]
        with torch.no_grad() if criterion != "taylor" else torch.enable_grad():
            ofa.sort_channels(self.net, criterion, batches=batches)

    def _checkpoint_state(self, optimizer, scheduler) -> dict[str, Any]:
        scaler = self.accelerator.scaler
        return {"model": self.net.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                "teacher": self.teacher.state_dict() if self.teacher is not None else None,
                "optimizer_phase": self.optimizer_phase, "position": self.pos.to_dict(),
                "sorted_phases": list(self.sorted_phases), "rng": rng_state(),
                "metrics_rows": self.metrics.rows_written, "world_size": self.world}

    def _save(self, optimizer, scheduler) -> None:
        if self.main:
            self.checkpoint_path = save_checkpoint(self.run_dir, self.pos.global_step,
                                                   self._checkpoint_state(optimizer, scheduler),
                                                   keep=self.config.keep_checkpoints)
        self.accelerator.wait_for_everyone()

    # -- evaluation ------------------------------------------------------------------------------------------
    def evaluate_epoch(self, p: int, epoch: int, train_loss: float, lr: float, images_per_s: float) -> None:
        if not self.main:
            return
        phase, classes, line = self.phases[p], self.data.num_classes, []
        for label, arch, m in evaluate_subnets(self.net, self.data, self.spaces[p], self.config.eval):
            macs, _ = self.net.costs(arch)
            self.metrics.append({"phase": phase.name, "epoch": epoch + 1,
                                 "step": self.pos.global_step, "subnet": label, "resolution": arch.resolution,
                                 "macs": macs, "val_loss": round(m.loss, 5), "val_top1": round(m.top1, 3),
                                 "ci_low": round(m.ci_low, 3), "ci_high": round(m.ci_high, 3),
                                 "train_loss": round(train_loss, 5), "lr": lr,
                                 "images_per_s": round(images_per_s, 1), "arch": arch.to_json()})
            self.accelerator.log({f"val_top1/{label}": m.top1, f"val_loss/{label}": m.loss},
                                 step=self.pos.global_step)
            line.append(f"{label} {m.top1:.1f}%")
            if epoch + 1 == phase.epochs and m.at_chance(classes):
                tqdm.write(f"WARNING: the {label} subnet is at chance level after phase {phase.name!r}: "
                           f"validation top-1 {m.top1:.1f}% [95% interval {m.ci_low:.1f}, {m.ci_high:.1f}] "
                           f"contains {100.0 / classes:.1f}% (1/{classes} classes). It is not learning: "
                           "check the labels, lower the phase's lr or train longer", file=sys.stderr)
        if self.progress:
            tqdm.write(f"{phase.name} {epoch + 1}/{phase.epochs} (step {self.pos.global_step}): "
                       f"validation top-1 {', '.join(line)}; train loss {train_loss:.3f}, "
                       f"{images_per_s:.0f} images/s")

    # -- the end ----------------------------------------------------------------------------------------------
    def _finish(self) -> TrainResult:
        acc = self.accelerator
        largest = self.net.space.largest()
        self.net.set_active(largest)
        # The stored statistics (the largest arch's) are re-estimated on the calibration images, as evaluation
        # does, so the saved supernet's largest arch runs as it was measured (same images on every process).
        ofa.calibrate_bn(self.net, calib_loader(self.data, largest.resolution, self.config.eval))
        self.net.data_config = copy.deepcopy(self.data.data_config)
        weights = RunDir(self.run_dir).supernet
        if self.main:
            ofa.save(self.net, weights)
        params_hash = state_hash(self.net, params_only=True)
        if self.world > 1:
            # Each process updated the largest arch's BN statistics on its own images (DDP broadcasts them
            # from process 0 only at the next forward): take process 0's, so every process ends identical.
            import torch.distributed as dist

            for buffer in self.net.buffers():
                dist.broadcast(buffer.data, src=0)
        if self.config.log_subnets:
            log = {"rank": self.rank, "world_size": self.world, "final_weights_sha256": state_hash(self.net),
                   "final_parameters_sha256": params_hash,
                   "subnets": self.subnet_log}
            path = RunDir(self.run_dir).rank_log(self.rank)
            atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(log)))
        acc.wait_for_everyone()
        acc.end_training()
        return TrainResult(self.run_dir, weights, self.pos.global_step, self.metrics.read() if self.main else [],
                           self.main, sorted(UNREADABLE))


def train(config: TrainConfig | dict[str, Any] | str | os.PathLike | None = None, out: str | os.PathLike | None = None,
          resume: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None, progress: bool = True,
          on_step: Callable[[Trainer], None] | None = None) -> TrainResult:
    """Train a supernet through every phase of ``config`` into the run directory ``out``; or, with
    ``resume=RUN``, continue RUN from its last checkpoint (with RUN's own config.yaml).

    ``overrides`` replaces top-level config entries (e.g. ``{"mixed_precision": "bf16"}``). ``on_step`` is called
    after every optimizer step with the Trainer (``.pos``: its :class:`Position`, phase, epoch, batch, global_step;
    ``.net``).
    """
    resolved, run_dir = run_config(config, out, resume, overrides)
    resolved.threads = resolved.threads or default_threads()  # fixed for the run, recorded in config.yaml
    with num_threads(resolved.threads):
        trainer = Trainer(resolved, run_dir, resume=resume is not None, progress=progress, on_step=on_step)
        if resume is None and trainer.main:
            write_config(run_dir, resolved, trainer.net)
        trainer.accelerator.wait_for_everyone()
        try:
            return trainer.run()
        except KeyboardInterrupt:
            if trainer.main:
                print(f"interrupted; the last checkpoint is in {RunDir(run_dir).checkpoints}: continue with "
                      f"`ofa train --resume {run_dir}`", file=sys.stderr)
            raise
