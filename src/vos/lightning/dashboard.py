"""What a wandb run shows of each validation, beside the scalars Lightning logs.

With ``logger=wandb``, `vos.train` gives the `VOSModule` a `ValidationDashboard`. Each
validation video is then run inside `vos.profiling.PeakMemory`, the module logs ``val/peak_memory_mb`` (the
largest peak over the videos), and at the validation's end the dashboard logs, at the step
of the validation's scalars:

- ``val/per_sequence``: a table with one row per video: ``video``, ``objects`` (scored
  objects), ``frames``, ``J&F``, ``J``, ``F`` (means over the video's objects),
  ``ms_per_frame``, ``read_ms_per_frame`` (the memory read's share), ``peak_memory_mb`` and
  one column per video factor (true, false, or empty when unknown);
- ``val/masks/<video>``: for the first ``logger.media_videos`` videos of the eval split, the
  frames ``logger.media_frames`` (``first``, ``middle``, ``last`` or frame indices) with the
  predicted and the ground-truth masks as overlays; the media panel's step slider shows how
  the masks change over training.

Under DDP each rank runs its share of the videos: the timings and frames are gathered so that
global rank zero alone logs, and the table holds every video.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vos.data.palette import VOID_LABEL

FRAME_NAMES = ("first", "middle", "last")
TABLE_KEY = "val/per_sequence"
MASKS_KEY = "val/masks"


def frame_indices(spec: Sequence[str | int], num_frames: int) -> list[int]:
    """The frames ``spec`` names in a video of ``num_frames``: ``first``, ``middle``,
    ``last`` or an index (negative from the end); indices outside the video are skipped."""
    named = {"first": 0, "middle": (num_frames - 1) // 2, "last": num_frames - 1}
    indices = set()
    for item in spec:
        if isinstance(item, str) and item in named:
            index = named[item]
        elif isinstance(item, int) and not isinstance(item, bool):
            index = item if item >= 0 else num_frames + item
        else:
            raise ValueError(
                f"logger.media_frames: {item!r} is not a frame; expected first, middle, last "
                "or a frame index"
            )
        if 0 <= index < num_frames:
            indices.add(index)
    return sorted(indices)


def _distributed() -> bool:
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


class ValidationDashboard:
    """Collects each validation video's timings, memory and media frames; `log` writes the
    table and the mask overlays (see the module's docstring)."""

    def __init__(self, media_videos: int = 2, media_frames: Sequence[str | int] = FRAME_NAMES):
        if int(media_videos) < 0:
            raise ValueError(f"logger.media_videos={media_videos}; expected 0 or more")
        self.media_videos = int(media_videos)
        self.media_frames = list(media_frames)
        frame_indices(self.media_frames, 1)  # a bad name fails before training starts
        self._media_names: list[str] | None = None
        self._videos: dict[str, dict[str, float]] = {}
        self._media: dict[
            str, tuple[list[int], list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]]
        ] = {}

    @classmethod
    def from_config(cls, logger_cfg: Any) -> ValidationDashboard:
        """From the ``logger=`` config's ``media_videos`` and ``media_frames``."""
        frames = logger_cfg.get("media_frames", FRAME_NAMES)
        frames = [frames] if isinstance(frames, (str, int)) else list(frames)  # media_frames=last
        return cls(logger_cfg.get("media_videos", 2), frames)

    def media_names(self, source: Any) -> list[str]:
        """The videos shown as overlays: the first ``media_videos`` of the eval split."""
        if self._media_names is None:
            self._media_names = list(source.videos()[: self.media_videos])
        return self._media_names

    def add_video(
        self, source: Any, video: str, result: Any, gt: np.ndarray, peak_mb: float
    ) -> None:
        """One validated video: the engine's ``VideoResult``, its ground truth ``[T, H, W]``
        and the peak memory of its run."""
        self._videos[video] = {
            "frames": len(result.labels),
            "ms_per_frame": 1000 * float(np.mean(result.frame_seconds)),
            "read_ms_per_frame": 1000 * float(np.mean(result.read_seconds)),
            "peak_memory_mb": float(peak_mb),
        }
        if video in self.media_names(source):
            frames = [
                (t, source.read_frame(video, t), result.labels[t].copy(), np.array(gt[t]))
                for t in frame_indices(self.media_frames, len(result.labels))
            ]
            self._media[video] = (source.info(video).object_ids, frames)

    def _gather(self) -> tuple[dict, dict]:
        videos, media = self._videos, self._media
        self._videos, self._media = {}, {}
        if not _distributed():
            return videos, media
        gathered: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, (videos, media))
        all_videos: dict = {}
        all_media: dict = {}
        for rank_videos, rank_media in gathered:
            for name, stats in rank_videos.items():
                all_videos.setdefault(name, stats)  # a padded sampler's repeat: the first
            for name, frames in rank_media.items():
                all_media.setdefault(name, frames)
        return all_videos, all_media

    def log(self, module: Any, per_video: list[dict[str, object]]) -> None:
        """Log the table (``per_video``: `vos.metrics.JAndF.per_video`) and the overlays
        at the step of this validation's scalars. Collective under DDP: every rank calls it,
        global rank zero logs. Nothing is logged during Lightning's sanity check."""
        videos, media = self._gather()
        trainer = module.trainer
        if not trainer.is_global_zero or trainer.sanity_checking or not module.logger:
            return
        import wandb

        factors = [
            key
            for key in (per_video[0] if per_video else {})
            if key not in ("video", "objects", "J&F-Mean", "J-Mean", "F-Mean")
        ]
        stats_columns = ["frames", "ms_per_frame", "read_ms_per_frame", "peak_memory_mb"]
        columns = ["video", "objects", "J&F", "J", "F", *stats_columns, *factors]
        table = wandb.Table(columns=columns, allow_mixed_types=True)
        for row in per_video:
            stats = videos.get(str(row["video"]), {})
            table.add_data(
                row["video"],
                row["objects"],
                row["J&F-Mean"],
                row["J-Mean"],
                row["F-Mean"],
                *(stats.get(column) for column in stats_columns),
                *(row[factor] for factor in factors),
            )
        payload: dict[str, Any] = {TABLE_KEY: table}
        for video, (object_ids, frames) in sorted(media.items()):
            payload[f"{MASKS_KEY}/{video}"] = [
                overlay(video, t, frame, pred, gt, object_ids) for t, frame, pred, gt in frames
            ]
        module.logger.log_metrics(payload, step=logging_step(trainer))


def logging_step(trainer: Any) -> int:
    """The step Lightning logs this validation's scalars at (its own callbacks read it
    too), so that the table and the overlays share ``val/J&F-Mean``'s step."""
    epoch_loop = getattr(trainer.fit_loop, "epoch_loop", None)
    return int(getattr(epoch_loop, "_batches_that_stepped", trainer.global_step))


def overlay(
    video: str,
    index: int,
    frame: np.ndarray,
    prediction: np.ndarray,
    ground_truth: np.ndarray,
    object_ids: Sequence[int],
) -> Any:
    """A ``wandb.Image`` of a frame with two mask layers, ``prediction`` and
    ``ground_truth`` (label maps ``[H, W]``), each object labelled by its id."""
    import wandb

    labels = {0: "background", **{int(i): f"object {int(i)}" for i in object_ids}}
    truth_labels = dict(labels)
    if (ground_truth == VOID_LABEL).any():
        truth_labels[VOID_LABEL] = "void"
    return wandb.Image(
        frame,
        caption=f"{video} frame {index}",
        masks={
            "prediction": {"mask_data": prediction.astype(np.uint8), "class_labels": labels},
            "ground_truth": {
                "mask_data": ground_truth.astype(np.uint8),
                "class_labels": truth_labels,
            },
        },
    )
