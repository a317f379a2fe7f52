"""The sandwich step: the largest, the smallest and N random subnets, one optimizer step.

The largest subnet learns from the hard labels (cross-entropy with label smoothing); the others learn from the
largest's detached soft output (in-place distillation, KL divergence), plus the frozen teacher's output when
knowledge distillation is on. Gradients of all subnets accumulate; the caller then takes ONE optimizer step.
Subnets come from (seed, global step) alone, so every process of a distributed run trains the same ones.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ofa.space import Arch, SearchSpace


def sample_subnets(space: SearchSpace, seed: int, global_step: int, num_random: int) -> list[Arch]:
    """[largest, smallest, N random] of ``space`` for this step (a space of one arch gives [largest])."""
    largest = space.largest()
    if space.size() == 1:
        return [largest]
    rng = random.Random(f"ofa-sandwich/{seed}/{global_step}")  # str seeds hash identically in every process
    return [largest, space.smallest()] + [space.sample(rng) for _ in range(num_random)]


def resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """The loader's batch (at the space's largest resolution) resized to a subnet's resolution."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=True)


def soft_kl(student_logits: torch.Tensor, target_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(target || student) of temperature-softened distributions, scaled by T^2 (Hinton et al.)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits.float() / t, dim=1), F.softmax(target_logits.float() / t, dim=1),
                    reduction="batchmean") * (t * t)


@dataclass
class StepLosses:
    archs: list[Arch]
    losses: list[torch.Tensor]  # detached, one per subnet, in the order of `archs`

    @property
    def total(self) -> torch.Tensor:
        return torch.stack(self.losses).sum()


def sandwich_backward(model: nn.Module, supernet: nn.Module, archs: Sequence[Arch], images: torch.Tensor,
                      labels: torch.Tensor, *, label_smoothing: float = 0.1, teacher: nn.Module | None = None,
                      kd_ratio: float = 0.0, temperature: float = 1.0, accelerator=None) -> StepLosses:
    """Forward and backward every subnet of ``archs`` (archs[0] is the largest); gradients accumulate.

    ``model`` is what is called (the DDP wrapper in a distributed run), ``supernet`` the plain module whose active
    arch is set. With an ``accelerator``, autocast and loss scaling apply, and gradients are all-reduced only on
    the last backward (``no_sync`` for the others).
    """
    autocast = accelerator.autocast if accelerator is not None else contextlib.nullcontext
    teacher_logits = None
    if teacher is not None and kd_ratio > 0:
        with torch.no_grad(), autocast():
            teacher_logits = teacher(resize(images, teacher.active_arch.resolution)).float()
    target = None
    losses = []
    for i, arch in enumerate(archs):
        supernet.set_active(arch)
        last = i == len(archs) - 1
        sync = contextlib.nullcontext() if last or accelerator is None else accelerator.no_sync(model)
        with sync:
            with autocast():
                logits = model(resize(images, arch.resolution))
            if i == 0:
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
                target = logits.detach()
            else:
                loss = soft_kl(logits, target, temperature)
            if teacher_logits is not None:
                loss = loss + kd_ratio * soft_kl(logits, teacher_logits, temperature)
            if accelerator is not None:
                accelerator.backward(loss)
            else:
                loss.backward()
        losses.append(loss.detach())
    supernet.set_active(archs[0])
    return StepLosses(list(archs), losses)
