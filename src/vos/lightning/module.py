"""The LightningModule: one training step and one validation protocol for every reader."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from vos.inference.engine import InferenceEngine
from vos.lightning.dashboard import ValidationDashboard
from vos.lightning.datamodule import ValidationSet
from vos.lightning.optim import configure_optimization
from vos.metrics import JAndF
from vos.model.loss import bootstrap_fraction, bootstrapped_cross_entropy
from vos.model.network import build_network
from vos.profiling import PeakMemory


def _plain(cfg: Any) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


class VOSModule(pl.LightningModule):
    """Holds the network and its recipe. Configs are stored in the checkpoint, so
    `vos.eval` rebuilds the same network from ``ckpt_path`` alone."""

    def __init__(self, model: dict, optim: dict, lr_schedule: dict, loss: dict, inference: dict):
        super().__init__()
        self.save_hyperparameters(
            {
                "model": _plain(model),
                "optim": _plain(optim),
                "lr_schedule": _plain(lr_schedule),
                "loss": _plain(loss),
                "inference": _plain(inference),
            }
        )
        self.network = build_network(self.hparams.model)
        self.engine = InferenceEngine(self.network, **self.hparams.inference)
        self.val_metric = JAndF()
        # set by vos.train under logger=wandb: per-video tables, mask overlays, peak memory
        self.dashboard: ValidationDashboard | None = None
        # the last validation's per-video rows (JAndF.per_video), for metrics.json
        self.last_per_video: list[dict[str, object]] | None = None
        # dataset.extra_eval: a JAndF per extra set (made in setup; its states are not
        # saved) and the last validation's per-video rows by set name
        self.extra_metrics: dict[str, JAndF] = {}
        self.last_extra_per_video: dict[str, list[dict[str, object]]] = {}

    # -- training ------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        outputs = self.network.segment_clip(
            batch["frames"], batch["labels"], batch["present"], batch.get("flow")
        )
        boot = self.hparams.loss["bootstrap"]
        fraction = bootstrap_fraction(
            self.global_step, boot["start_step"], boot["end_step"], boot["end_fraction"]
        )
        losses = {
            f"ce_frame{t}": bootstrapped_cross_entropy(logits, batch["labels"][:, t], fraction)
            for t, logits in enumerate(outputs, start=1)
        }
        losses.update(self.network.reader.extra_losses())
        total = sum(losses.values())
        batch_size = batch["frames"].shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=batch_size)
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        self.log("train/bootstrap_fraction", fraction, batch_size=batch_size)
        with torch.no_grad():
            iou = _batch_iou(outputs[-1], batch["labels"][:, -1], batch["present"])
        self.log("train/iou", iou, prog_bar=True, batch_size=batch_size)
        return total

    # -- validation: full videos through the shared inference engine --------------------
    # One loader per validation set (`VOSDataModule.validation_sets`): the eval split, logged
    # as val/..., and each dataset.extra_eval set, logged as extra/<name>/... (its own JAndF;
    # the wandb dashboard shows the eval split only)
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        extras = getattr(datamodule, "extra_eval", None) or []
        self.extra_metrics = {extra.name: JAndF() for extra in extras}

    def on_validation_start(self) -> None:
        for metric in self.extra_metrics.values():
            metric.to(self.device)

    def _metric(self, validation_set: ValidationSet) -> JAndF:
        extra = validation_set.extra
        return self.val_metric if extra is None else self.extra_metrics[extra.name]

    def validation_step(self, video: str, batch_idx: int, dataloader_idx: int = 0) -> None:
        validation_set = self.trainer.datamodule.validation_sets()[dataloader_idx]
        prefix, source = validation_set.prefix, validation_set.source
        metric = self._metric(validation_set)
        dashboard = self.dashboard if validation_set.extra is None else None
        info = source.info(video)
        if dashboard is None:
            result = self.engine.run_video(source, video)
        else:
            with PeakMemory(self.device) as memory:
                result = self.engine.run_video(source, video)
        gt = np.stack([source.read_mask(video, t) for t in range(info.num_frames)])
        metric.update(video, gt, result.labels, info.first_frames, info.factors)
        # keys are the set's own: no dataloader suffix (the eval split's are as they always were)
        log = {"batch_size": 1, "sync_dist": True, "add_dataloader_idx": False}
        if dashboard is not None:
            dashboard.add_video(source, video, result, gt, memory.peak_mb)
            self.log("val/peak_memory_mb", memory.peak_mb, reduce_fx="max", **log)
        # timings differ per rank: averaged over every rank's videos at the epoch's end
        ms_per_frame = 1000 * float(np.mean(result.frame_seconds))
        read_ms_per_frame = 1000 * float(np.mean(result.read_seconds))
        self.log(f"{prefix}/ms_per_frame", ms_per_frame, **log)
        self.log(f"{prefix}/read_ms_per_frame", read_ms_per_frame, **log)

    def on_validation_epoch_end(self) -> None:
        for validation_set in self.trainer.datamodule.validation_sets():
            extra = validation_set.extra
            per_video = self._log_scores(
                validation_set.prefix, self._metric(validation_set), extra is None
            )
            if per_video is None or self.trainer.sanity_checking:
                continue  # as Lightning drops the sanity check's scores
            if extra is None:
                self.last_per_video = per_video
            else:
                self.last_extra_per_video[extra.name] = per_video

    def _log_scores(self, prefix: str, metric: JAndF, is_main: bool) -> list[dict] | None:
        """Log one set's scores as ``<prefix>/<score>``; its per-video rows (None when it
        scored nothing)."""
        if not metric.update_called:
            return None
        # compute() gathers every rank's rows, so every rank holds the same full scores (and
        # the same names); sync_dist averages these equal values, as Lightning expects
        scores = metric.compute()
        for name, value in scores.items():
            show = is_main and name == "J&F-Mean"
            self.log(f"{prefix}/{name}", value, prog_bar=show, sync_dist=True)
        # collective like compute(): every rank gathers every video's row
        per_video = metric.per_video()
        if is_main and self.dashboard is not None:
            self.dashboard.log(self, per_video)  # global rank zero logs
        metric.reset()
        return per_video

    # -- optimisation --------------------------------------------------------------------
    def configure_optimizers(self):
        return configure_optimization(
            self, self.parameters(), self.hparams.optim, self.hparams.lr_schedule
        )


def _batch_iou(logits: Tensor, labels: Tensor, present: Tensor) -> Tensor:
    """Mean IoU over the present objects of a batch (a cheap training signal)."""
    prediction = logits.argmax(dim=1)
    ious = []
    for o in range(present.shape[1]):
        gt = labels == o + 1
        pr = prediction == o + 1
        inter = (gt & pr).flatten(1).sum(1).float()
        union = (gt | pr).flatten(1).sum(1).float()
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        ious.append(iou[present[:, o]])
    ious = torch.cat(ious)
    return ious.mean() if ious.numel() else logits.new_tensor(1.0)
