"""Optimisers and learning-rate schedules, chosen by ``_target_`` (``optim=adamw|adam|sgd``,
``lr_schedule=step|constant|cosine``).

An ``optim`` config is a ``torch.optim`` class with its arguments (``params`` is given here);
an ``lr_schedule`` config is one of the schedules below with its arguments (``total_steps`` is
given here): a callable from the optimiser step to the factor on the base learning rate, run
by `torch.optim.lr_scheduler.LambdaLR` every step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import hydra
import pytorch_lightning as pl
import torch


class _Warmup:
    """Linear warm-up over ``warmup_steps`` steps, then ``after(step)``."""

    def __init__(self, total_steps: int, warmup_steps: int = 0):
        if warmup_steps < 0:
            raise ValueError(f"lr_schedule.warmup_steps must be >= 0, got {warmup_steps}")
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return self.after(step)

    def after(self, step: int) -> float:
        raise NotImplementedError


class ConstantSchedule(_Warmup):
    def after(self, step: int) -> float:
        return 1.0


class StepSchedule(_Warmup):
    """× ``gamma`` at each milestone: a fraction of training (< 1) or an absolute step."""

    def __init__(
        self,
        total_steps: int,
        milestones: Sequence[float] = (0.8,),
        gamma: float = 0.1,
        warmup_steps: int = 0,
    ):
        super().__init__(total_steps, warmup_steps)
        self.milestones = [
            int(m * self.total_steps) if m < 1 else int(m) for m in (milestones or [])
        ]
        self.gamma = float(gamma)

    def after(self, step: int) -> float:
        return self.gamma ** sum(step >= m for m in self.milestones)


class CosineSchedule(_Warmup):
    """Half a cosine from 1 after the warm-up to ``min_factor`` at the last step."""

    def __init__(self, total_steps: int, min_factor: float = 0.0, warmup_steps: int = 0):
        super().__init__(total_steps, warmup_steps)
        self.min_factor = float(min_factor)

    def after(self, step: int) -> float:
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def configure_optimization(
    module: pl.LightningModule,
    parameters: Iterable[torch.nn.Parameter],
    optim: Mapping[str, Any],
    lr_schedule: Mapping[str, Any],
) -> dict[str, Any]:
    """What ``module.configure_optimizers`` returns: the optimiser of ``optim`` over
    ``parameters`` and a per-step `LambdaLR` of ``lr_schedule`` over the trainer's
    ``max_steps`` (one step when no trainer is attached)."""
    trainer = module._trainer  # the public property raises before a trainer is attached
    total_steps = None if trainer is None else trainer.max_steps
    params = [p for p in parameters if p.requires_grad]
    # plain lists, not ListConfig: the optimiser state goes into weights-only checkpoints
    optimizer = hydra.utils.instantiate(dict(optim), params=params, _convert_="all")
    total = total_steps if total_steps and total_steps > 0 else 1
    factor = hydra.utils.instantiate(dict(lr_schedule), total_steps=total, _convert_="all")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
