"""The learning-rate schedule: warm-up, then multistep, cosine or constant; applied to every parameter group."""

from __future__ import annotations

import math

import torch

from ..config import OptimConfig


class LearningRateSchedule:
    """lr(t) for a (fractional) epoch t, from the ``optim`` section of a run config.

    Warm-up ramps linearly from 0 to ``lr`` over ``warmup_epochs``; then ``multistep`` multiplies by ``gamma``
    at each milestone epoch, ``cosine`` decays to 0 at the last epoch, ``constant`` keeps ``lr``.
    """

    def __init__(self, optim: OptimConfig):
        self.optim = optim

    def lr_at(self, epoch: float) -> float:
        o = self.optim
        if o.warmup_epochs and epoch < o.warmup_epochs:
            return o.lr * epoch / o.warmup_epochs
        if o.schedule == "multistep":
            return o.lr * o.gamma ** sum(int(epoch) >= m for m in o.milestones)
        if o.schedule == "cosine":
            span = max(o.epochs - o.warmup_epochs, 1e-9)
            return o.lr * 0.5 * (1 + math.cos(math.pi * (epoch - o.warmup_epochs) / span))
        return o.lr

    def apply(self, optimizer: torch.optim.Optimizer, epoch: float) -> float:
        """Set every group's lr to lr(epoch) times the group's ``lr_scale``; returns lr(epoch)."""
        lr = self.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr
