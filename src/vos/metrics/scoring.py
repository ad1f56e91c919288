"""Scoring folders of predicted masks: read ``<pred_root>/<video>/<frame>.png`` and score them
against a source's ground truth with `JAndF` (semi-supervised protocol).

What ``python -m vos.evaluate`` runs (`evaluate_folders`) and what ``python -m vos.eval`` uses
to score its own predictions read back from disk (`score_predictions`), so both report
identical numbers. Predictions are palette or grayscale PNGs whose values are object ids,
named like the source's frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vos.data import palette
from vos.data.source import DatasetError, VideoSource
from vos.data.sources.davis import DavisSource
from vos.metrics.metric import JAndF

_SHOWN_MISSING = 5  # how many missing prediction paths an error lists


def prediction_path(pred_root: str | Path, video: str, frame_name: str) -> Path:
    return Path(pred_root) / video / f"{frame_name}.png"


def _check_predictions_exist(source: VideoSource, pred_root: Path, videos: list[str]) -> None:
    """Fail before scoring anything when predictions are missing, naming them."""
    if not pred_root.is_dir():
        raise DatasetError(f"prediction folder not found: {pred_root}")
    missing_videos = [video for video in videos if not (pred_root / video).is_dir()]
    if missing_videos:
        raise DatasetError(
            f"{len(missing_videos)} videos have no prediction folder in {pred_root}: "
            + ", ".join(missing_videos)
        )
    missing_frames = [
        path
        for video in videos
        for frame_name in source.info(video).frame_names
        if not (path := prediction_path(pred_root, video, frame_name)).is_file()
    ]
    if missing_frames:
        shown = ", ".join(str(path) for path in missing_frames[:_SHOWN_MISSING])
        more = (
            f" and {len(missing_frames) - _SHOWN_MISSING} more"
            if len(missing_frames) > _SHOWN_MISSING
            else ""
        )
        raise DatasetError(f"{len(missing_frames)} predicted frames are missing: {shown}{more}")


def _read_prediction(path: Path, height: int, width: int) -> np.ndarray:
    mask = palette.read_mask(path)  # refuses RGB and corrupt PNGs, naming the file
    if mask.shape != (height, width):
        raise DatasetError(
            f"prediction {path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its ground truth "
            f"is {width}x{height}"
        )
    return mask


def score_predictions(
    source: VideoSource, pred_root: str | Path, videos: list[str] | None = None
) -> JAndF:
    """Score the predictions in ``pred_root`` against ``source``'s ground truth masks.

    ``videos`` defaults to all of the source's; every frame of each needs its ground-truth
    mask. Returns the filled `JAndF` (call ``compute()``). Raises `DatasetError` /
    `vos.data.palette.ImageReadError` naming what is missing or wrong, and ValueError naming
    a predicted label that is not an object of its video.
    """
    pred_root = Path(pred_root)
    videos = source.videos() if videos is None else list(videos)
    _check_predictions_exist(source, pred_root, videos)
    metric = JAndF()
    for video in videos:
        info = source.info(video)
        gt = np.stack([source.read_mask(video, index) for index in range(info.num_frames)])
        pred = np.stack(
            [
                _read_prediction(prediction_path(pred_root, video, name), info.height, info.width)
                for name in info.frame_names
            ]
        )
        try:
            metric.update(video, gt, pred, info.first_frames, info.factors)
        except ValueError as error:
            raise ValueError(f"video {video!r} in {pred_root}: {error}") from error
    return metric


def evaluate_folders(
    gt_root: str | Path,
    pred_root: str | Path,
    split: str = "val",
    resolution: str = "480p",
    year: str = "2017",
) -> JAndF:
    """Score every video of a DAVIS-layout split (all masks required) with
    `score_predictions`; what ``python -m vos.evaluate`` runs."""
    source = DavisSource(gt_root, split, str(resolution), str(year), require_all_masks=True)
    return score_predictions(source, pred_root)
