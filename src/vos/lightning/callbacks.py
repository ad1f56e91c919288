"""Training callbacks: reader settings that follow the step, the final checkpoint, and a
progress bar in steps.

`ReaderSchedule`: reader settings that follow the training step (HMMN's fine-readout dropout,
§4.1; LMRC's scale loss).

``model.schedule`` maps a reader setting to a linear ramp over global steps::

    schedule:
      readout_dropout: {start: 0.5, end: 0.0, start_step: 0, end_step: 1000}
      scale_loss_weight: {start: 1.0e-4, end: 0.0, start_step: 0.005, end_step: 0.005}

``start_step``/``end_step`` between 0 and 1 (exclusive) are fractions of the run's
``trainer.max_steps``, rounded to a step and at least step 1, as the learning-rate
schedule's milestones below 1 are (`vos.lightning.optim`); 0 and values from 1 on are steps.
LMRC's scale loss ends after 0.5% of training, 1K of the paper's 200K iterations.

Before every training batch `ReaderSchedule` sets each value through the reader's
``set_<name>`` method and logs it, so a resumed run continues the ramp where it stopped.
Validation and inference never use the training-time value (dropout is off in eval mode).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar


def schedule_step(value: float, total_steps: int | None, name: str = "step") -> int:
    """A ramp's step: ``value`` itself, or in (0, 1) a fraction of ``total_steps`` (rounded, at
    least 1)."""
    if value < 0:
        raise ValueError(f"model.schedule: {name} must be >= 0, got {value}")
    if value >= 1 or value == 0:
        return int(value)
    if total_steps is None or total_steps <= 0:
        raise ValueError(
            f"model.schedule: {name}={value} is a fraction of training, which needs "
            f"trainer.max_steps > 0 (got {total_steps})"
        )
    return max(1, round(value * total_steps))


def scheduled_value(step: int, start: float, end: float, start_step: int, end_step: int) -> float:
    """Linear from ``start`` at ``start_step`` to ``end`` at ``end_step``, constant outside."""
    if end_step <= start_step:
        return end if step >= end_step else start
    progress = min(max((step - start_step) / (end_step - start_step), 0.0), 1.0)
    return start + (end - start) * progress


class ReaderSchedule(pl.Callback):
    """``total_steps``: what fractional ``start_step``/``end_step`` are fractions of; without
    it, `setup` takes the trainer's ``max_steps``."""

    def __init__(self, schedule: Mapping[str, Mapping[str, float]], total_steps: int | None = None):
        self.schedule = {name: dict(ramp) for name, ramp in schedule.items()}
        self.total_steps = total_steps

    def check(self, reader: object) -> None:
        for name, ramp in self.schedule.items():
            if not callable(getattr(reader, f"set_{name}", None)):
                raise ValueError(
                    f"model.schedule.{name}: the reader {type(reader).__name__} has no "
                    f"set_{name}() to schedule"
                )
            missing = {"start", "end", "start_step", "end_step"} - set(ramp)
            if missing:
                raise ValueError(f"model.schedule.{name} lacks {sorted(missing)}")

    def steps(self, name: str) -> tuple[int, int]:
        """The ramp of ``name`` as global steps ``(start_step, end_step)``."""
        ramp = self.schedule[name]
        return (
            schedule_step(float(ramp["start_step"]), self.total_steps, f"{name}.start_step"),
            schedule_step(float(ramp["end_step"]), self.total_steps, f"{name}.end_step"),
        )

    def values_at(self, step: int) -> dict[str, float]:
        return {
            name: scheduled_value(step, float(ramp["start"]), float(ramp["end"]), *self.steps(name))
            for name, ramp in self.schedule.items()
        }

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.total_steps is None:
            self.total_steps = trainer.max_steps
        self.check(pl_module.network.reader)
        for name in self.schedule:  # a fraction without a step count fails here, not mid-run
            self.steps(name)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        reader = pl_module.network.reader
        for name, value in self.values_at(trainer.global_step).items():
            getattr(reader, f"set_{name}")(value)
            pl_module.log(f"schedule/{name}", value, on_step=True, on_epoch=False)


class FinalCheckpoint(pl.Callback):
    """Writes ``last.ckpt`` when training ends, so that it holds the final step's state.

    Lightning's ModelCheckpoint (2.6) writes ``last.ckpt`` only beside a periodic checkpoint
    once it has written one: a run whose ``trainer.max_steps`` is not a multiple of
    ``checkpoint.every_n_steps`` ended with ``last.ckpt`` at its last periodic step (1600
    steps, every 500: step 1500), its final steps' weights in no file. Training that stops by
    an error or a kill does not reach this (resume from the last periodic checkpoint).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # every rank calls it: saving is collective under sharded strategies
        trainer.save_checkpoint(self.path)


class StepProgressBar(RichProgressBar):
    """The training bar counts optimiser steps of ``trainer.max_steps`` (a run is a number of
    steps, not of epochs: the loader holds exactly the clips of the whole run), continuing
    from the restored step when a run resumes."""

    @property
    def total_train_batches(self) -> int | float:
        max_steps = self.trainer.max_steps
        return max_steps if max_steps and max_steps > 0 else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{'training steps':{len(self.validation_description)}}"

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._update(self.train_progress_bar_id, trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._update(self.train_progress_bar_id, trainer.global_step)
