"""The one interface every dataset implements: a split of videos read frame by frame.

Training clips (`vos.data.clips`) and full-video inference (`vos.inference`) only talk to
this interface, so the generated dataset, DAVIS and YouTube-VOS are interchangeable.

Conventions (shared by all sources):
- frames are RGB ``uint8 [H, W, 3]``;
- masks are label maps ``uint8 [H, W]``: 0 background, 1..O objects, 255 void;
- ``flow`` is backward optical flow ``float32 [2, H, W]`` (u, v) in pixels, mapping a pixel of
  frame t to its position in frame t-1 (so frame t-1 sampled at ``p + flow(p)`` gives frame t);
  frame 0's flow is all zeros.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np


class DatasetError(ValueError):
    """A dataset on disk (or its configuration) is not what the reader expects; names it."""


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a video without reading its pixels."""

    name: str
    frame_names: list[str]  # file stems, e.g. "00000", in temporal order
    height: int
    width: int
    # object id -> index of the frame whose mask first contains it (the mask that is given
    # to a semi-supervised method for that object)
    first_frames: dict[int, int]
    # frame indices that have a mask on disk (all of them for train/val ground truth)
    annotated: list[int]
    # per-video properties for per-factor scores (e.g. {"distractors": True}); {} if unknown
    factors: dict[str, bool] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return len(self.frame_names)

    @property
    def object_ids(self) -> list[int]:
        return sorted(self.first_frames)


class VideoSource(abc.ABC):
    """A split of videos. Implementations read lazily and raise `DatasetError` /
    `vos.data.palette.ImageReadError` with the offending path or key in the message."""

    @abc.abstractmethod
    def videos(self) -> list[str]:
        """Video names in a stable order."""

    @abc.abstractmethod
    def info(self, video: str) -> VideoInfo: ...

    @abc.abstractmethod
    def read_frame(self, video: str, index: int) -> np.ndarray:
        """RGB ``uint8 [H, W, 3]``."""

    @abc.abstractmethod
    def read_mask(self, video: str, index: int) -> np.ndarray:
        """Label map ``uint8 [H, W]``; raises `DatasetError` if the frame has no mask."""

    def read_flow(self, video: str, index: int) -> np.ndarray | None:
        """Backward flow ``float32 [2, H, W]`` (t -> t-1), or None when the source has none."""
        return None

    def __len__(self) -> int:
        return len(self.videos())
