"""The LightningModule: one training step and one validation protocol for every reader."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from vos.dashboard import PeakMemory, ValidationDashboard
from vos.inference import InferenceEngine, pad_to_stride
from vos.metrics import JAndF
from vos.model.loss import bootstrap_fraction, bootstrapped_cross_entropy
from vos.model.memory import MemoryBank
from vos.model.network import build_network
from vos.model.readers.base import FrameFeatures, ReaderState


def _plain(cfg: Any) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


class VOSModule(pl.LightningModule):
    """Holds the network and its recipe. Configs are stored in the checkpoint, so
    `vos.eval` rebuilds the same network from ``ckpt_path`` alone."""

    def __init__(self, model: dict, optim: dict, loss: dict, inference: dict):
        super().__init__()
        self.save_hyperparameters(
            {
                "model": _plain(model),
                "optim": _plain(optim),
                "loss": _plain(loss),
                "inference": _plain(inference),
            }
        )
        self.network = build_network(self.hparams.model)
        self.engine = InferenceEngine(self.network, **self.hparams.inference)
        self.val_metric = JAndF()
        # set by vos.train under logger=wandb: per-video tables, mask overlays, peak memory
        self.dashboard: ValidationDashboard | None = None

    # -- training ------------------------------------------------------------------------
    def forward_clip(
        self, frames: Tensor, labels: Tensor, present: Tensor, flow: Tensor | None = None
    ) -> list[Tensor]:
        """Label logits for frames 1..T-1 of a clip; frame 0's mask is given.

        Each predicted frame's soft mask goes into memory before the next frame is read, as
        at inference. frames ``[B, T, 3, H, W]``, labels ``[B, T, H, W]``, present ``[B, O]``.
        """
        batch, num_frames = frames.shape[:2]
        objects = present.shape[1]
        height, width = frames.shape[-2:]
        padded = pad_to_stride(frames.flatten(0, 1))
        features = self.network.encode_frame(padded, index=0)
        if flow is None and self.network.reader.needs.needs_flow:
            flow = self._estimated_flow(frames)

        def frame_at(t: int) -> FrameFeatures:
            def pick(x: Tensor) -> Tensor:
                return x.view(batch, num_frames, *x.shape[1:])[:, t]

            return FrameFeatures(
                index=t,
                frames=pick(features.frames),
                features={k: pick(v) for k, v in features.features.items()},
                keys={k: pick(v) for k, v in features.keys.items()},
                query_value=pick(features.query_value),
                flow=None if flow is None else pad_to_stride(flow[:, t]),
            )

        first = labels[:, 0]
        given = torch.stack([(first == i + 1) for i in range(objects)], dim=1).float()
        given = pad_to_stride(given)
        memory = MemoryBank()
        state = ReaderState(previous_probs=given)
        self.network.memorize(memory, frame_at(0), given, permanent=True)
        outputs = []
        for t in range(1, num_frames):
            frame = frame_at(t)
            logits = self.network.segment(frame, memory, state, present)
            outputs.append(logits[..., :height, :width])
            object_probs = F.softmax(logits, dim=1)[:, 1:]
            state.previous_probs = object_probs
            if t < num_frames - 1:
                self.network.memorize(memory, frame, object_probs)
        return outputs

    @torch.no_grad()
    def _estimated_flow(self, frames: Tensor) -> Tensor:
        """Backward flow ``[B, T, 2, H, W]`` between consecutive clip frames from the frozen
        flow network (``model.flow.name``), for data without flow (DAVIS, YouTube-VOS)."""
        estimator = self.network.flow_estimator
        if estimator is None:
            raise ValueError(
                "the reader needs optical flow and the training data has none: set "
                f"model.flow.name (now {self.network.flow_name!r}) to tinyflownet or raft"
            )
        flow = frames.new_zeros(frames.shape[0], frames.shape[1], 2, *frames.shape[-2:])
        for t in range(1, frames.shape[1]):  # the estimators pad and crop on their own
            flow[:, t] = estimator(frames[:, t], frames[:, t - 1])
        return flow

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        outputs = self.forward_clip(
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
    def validation_step(self, video: str, batch_idx: int) -> None:
        source = self.trainer.datamodule.eval_source
        info = source.info(video)
        if self.dashboard is None:
            result = self.engine.run_video(source, video)
        else:
            with PeakMemory(self.device) as memory:
                result = self.engine.run_video(source, video)
        gt = np.stack([source.read_mask(video, t) for t in range(info.num_frames)])
        self.val_metric.update(video, gt, result.labels, info.first_frames, info.factors)
        if self.dashboard is not None:
            self.dashboard.add_video(source, video, result, gt, memory.peak_mb)
            self.log(
                "val/peak_memory_mb", memory.peak_mb, batch_size=1, sync_dist=True, reduce_fx="max"
            )
        # timings differ per rank: averaged over every rank's videos at the epoch's end
        ms_per_frame = 1000 * float(np.mean(result.frame_seconds))
        read_ms_per_frame = 1000 * float(np.mean(result.read_seconds))
        self.log("val/ms_per_frame", ms_per_frame, batch_size=1, sync_dist=True)
        self.log("val/read_ms_per_frame", read_ms_per_frame, batch_size=1, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if not self.val_metric.update_called:
            return
        # compute() gathers every rank's rows, so every rank holds the same full scores (and
        # the same names); sync_dist averages these equal values, as Lightning expects
        scores = self.val_metric.compute()
        for name, value in scores.items():
            self.log(f"val/{name}", value, prog_bar=name == "J&F-Mean", sync_dist=True)
        if self.dashboard is not None:
            # collective like compute(): every rank gathers, global rank zero logs
            self.dashboard.log(self, self.val_metric.per_video())
        self.val_metric.reset()

    # -- optimisation --------------------------------------------------------------------
    def configure_optimizers(self):
        optim = self.hparams.optim
        params = [p for p in self.parameters() if p.requires_grad]
        name = optim.get("name", "adamw")
        if name in ("adamw", "adam"):
            optimizer_class = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
            optimizer = optimizer_class(
                params,
                lr=optim["lr"],
                betas=tuple(optim["betas"]),
                weight_decay=optim["weight_decay"],
            )
        elif name == "sgd":
            optimizer = torch.optim.SGD(
                params,
                lr=optim["lr"],
                momentum=optim["momentum"],
                weight_decay=optim["weight_decay"],
            )
        else:
            raise ValueError(f"unknown optim.name {name!r}; expected adamw, adam or sgd")
        total = (
            self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 else 1
        )
        schedule = optim["schedule"]
        warmup = schedule.get("warmup_steps", 0)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if schedule["name"] == "constant":
                return 1.0
            if schedule["name"] == "step":
                return schedule["gamma"] ** sum(
                    step >= int(m * total) if m < 1 else step >= m for m in schedule["milestones"]
                )
            if schedule["name"] == "cosine":
                progress = min(1.0, (step - warmup) / max(1, total - warmup))
                floor = schedule.get("min_factor", 0.0)
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
            raise ValueError(
                f"unknown optim.schedule.name {schedule['name']!r}; expected constant, step or cosine"
            )

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


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
