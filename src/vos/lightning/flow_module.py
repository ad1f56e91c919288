"""Training a flow network on its own task (``python -m vos.train_flow``)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from vos.lightning.optim import configure_optimization
from vos.model.flow import TinyFlowNet, endpoint_error


class FlowModule(pl.LightningModule):
    """Trains `TinyFlowNet` on its own task (reference §1.6: ``L1Loss(est_flow, gt_flow)``
    with Adam, separately from RMNet). Batches are dicts with ``frame`` and ``previous``
    ``[B, 3, H, W]`` in [0, 1] and ``flow`` ``[B, 2, H, W]`` (backward, pixels), as
    `vos.data.flow_pairs.FlowPairDataset` yields. The net is the attribute ``flow``, so the
    checkpoint's keys start with ``flow.`` (what `vos.model.flow.tiny_flow_net` strips)."""

    def __init__(self, optim: dict, lr_schedule: dict) -> None:
        super().__init__()
        self.save_hyperparameters({"optim": dict(optim), "lr_schedule": dict(lr_schedule)})
        self.flow = TinyFlowNet()

    def forward(self, frame_t: Tensor, frame_prev: Tensor) -> Tensor:
        return self.flow(frame_t, frame_prev)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int = 0) -> Tensor:
        predicted = self.flow(batch["frame"], batch["previous"])
        loss = F.l1_loss(predicted, batch["flow"])
        batch_size = batch["frame"].shape[0]
        self.log("train/l1", loss, prog_bar=True, batch_size=batch_size)
        with torch.no_grad():
            epe = endpoint_error(predicted, batch["flow"])
        self.log("train/epe", epe, batch_size=batch_size)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int = 0) -> Tensor:
        predicted = self.flow(batch["frame"], batch["previous"])
        epe = endpoint_error(predicted, batch["flow"])
        batch_size = batch["frame"].shape[0]
        self.log("val/epe", epe, prog_bar=True, batch_size=batch_size)
        # the no-motion baseline on the same pairs: a flow network must beat it to be of use
        zero = endpoint_error(torch.zeros_like(batch["flow"]), batch["flow"])
        self.log("val/epe_zero_flow", zero, batch_size=batch_size)
        return epe

    def configure_optimizers(self):
        return configure_optimization(
            self, self.flow.parameters(), self.hparams.optim, self.hparams.lr_schedule
        )
