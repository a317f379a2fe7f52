"""Setting a run up: the supernet a config names, the accelerator, each phase's optimizer, and the hash a
distributed run's log compares."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

import ofa
from ofa.data import Data
from ofa.errors import OFAError

from .config import Phase, TrainConfig


def build_supernet(config: TrainConfig, data: Data) -> nn.Module:
    """The supernet a config names, sized to the data's classes and channels."""
    if config.timm is not None:
        entry = dict(config.timm)
        name = entry.pop("name")
        entry.pop("skip_first_phase", None)
        net = ofa.from_timm(name, num_classes=data.num_classes, in_chans=data.in_chans, **entry)
        if net.in_chans != data.in_chans:
            raise OFAError(f"timm model {name!r} takes {net.in_chans} input channels but the data "
                           f"{data.name!r} has {data.in_chans}")
        return net
    entry = dict(config.supernet)
    name = entry.pop("name")
    for key, value in (("num_classes", data.num_classes), ("in_chans", data.in_chans)):
        given = entry.pop(key, value)
        if given != value:
            raise OFAError(f"supernet {key}={given} but the data {data.name!r} has {value}; "
                           f"leave {key} out of the config (it comes from the data)")
    return ofa.create_supernet(name, num_classes=data.num_classes, in_chans=data.in_chans, **entry)


def make_optimizer(net: nn.Module, config: TrainConfig, phase: Phase, steps_per_epoch: int):
    """A phase's fresh timm optimizer and its per-step scheduler (warmup, then the config's schedule)."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    optimizer = create_optimizer_v2(net, lr=float(phase.lr), **dict(config.optimizer))
    scheduler, _ = create_scheduler_v2(optimizer, num_epochs=phase.epochs, warmup_epochs=phase.warmup_epochs,
                                       step_on_epochs=False, updates_per_epoch=steps_per_epoch,
                                       **dict(config.scheduler))
    return optimizer, scheduler


def state_hash(module: nn.Module, params_only: bool = False) -> str:
    h = hashlib.sha256()
    names = {n for n, _ in module.named_parameters()}
    for key, t in sorted(module.state_dict().items()):
        if params_only and key not in names:
            continue
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def make_accelerator(config: TrainConfig, run_dir: Path):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, is_tensorboard_available

    # Elastic depth leaves whole blocks unused by a subnet: DDP must not wait for their gradients.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    # cpu=True when no GPU exists, so that `torchrun --nproc_per_node N` on CPU forms one gloo group.
    cpu = bool(config.cpu) or not torch.cuda.is_available()
    log_with = config.log_with
    if log_with == "tensorboard" and not is_tensorboard_available():  # accelerate would drop it silently
        raise OFAError("log_with: tensorboard needs the tensorboard package: pip install 'ofa-supernet[tensorboard]'")
    try:
        return Accelerator(cpu=cpu, mixed_precision=config.mixed_precision, kwargs_handlers=[ddp],
                           gradient_accumulation_steps=config.gradient_accumulation_steps, log_with=log_with,
                           project_dir=str(run_dir))
    except ValueError as e:
        if "already been initialized" not in str(e):
            raise
        # accelerate keeps one device/precision state per process (a notebook, a script training twice)
        from accelerate.state import AcceleratorState

        raise OFAError(f"this process already trained with mixed_precision={AcceleratorState().mixed_precision!r} "
                       f"and accelerate allows one setting per process; train with "
                       f"mixed_precision={config.mixed_precision!r} in a new process (or restart the notebook "
                       "kernel)") from None
