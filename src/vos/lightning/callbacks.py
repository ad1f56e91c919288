"""Training callbacks: reader settings that follow the step, and a progress bar in steps.

`ReaderSchedule`: reader settings that follow the training step (HMMN's fine-readout dropout,
§4.1; LMRC's scale loss).

``model.schedule`` maps a reader setting to a linear ramp over global steps::

    schedule:
      readout_dropout: {start: 0.5, end: 0.0, start_step: 0, end_step: 1000}

Before every training batch `ReaderSchedule` sets each value through the reader's
``set_<name>`` method and logs it, so a resumed run continues the ramp where it stopped.
Validation and inference never use the training-time value (dropout is off in eval mode).
"""

from __future__ import annotations

from collections.abc import Mapping

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar


def scheduled_value(step: int, start: float, end: float, start_step: int, end_step: int) -> float:
    """Linear from ``start`` at ``start_step`` to ``end`` at ``end_step``, constant outside."""
    if end_step <= start_step:
        return end if step >= end_step else start
    progress = min(max((step - start_step) / (end_step - start_step), 0.0), 1.0)
    return start + (end - start) * progress


class ReaderSchedule(pl.Callback):
    def __init__(self, schedule: Mapping[str, Mapping[str, float]]):
        self.schedule = {name: dict(ramp) for name, ramp in schedule.items()}

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

    def values_at(self, step: int) -> dict[str, float]:
        return {
            name: scheduled_value(
                step,
                float(ramp["start"]),
                float(ramp["end"]),
                int(ramp["start_step"]),
                int(ramp["end_step"]),
            )
            for name, ramp in self.schedule.items()
        }

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.check(pl_module.network.reader)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        reader = pl_module.network.reader
        for name, value in self.values_at(trainer.global_step).items():
            getattr(reader, f"set_{name}")(value)
            pl_module.log(f"schedule/{name}", value, on_step=True, on_epoch=False)


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
