"""The one interface every dataset implements: a split of videos read frame by frame.

Training clips (`vos.data.clips`) and full-video inference (`vos.inference`) only talk to
this interface, so the generated dataset, DAVIS and YouTube-VOS are interchangeable.

Conventions (shared by all sources):
- frames are RGB ``uint8 [H, W, 3]``;
- masks are label maps ``uint8 [H, W]``: 0 background, 1..O objects, 255 void;
- ``flow`` is backward optical flow ``float32 [2, H, W]`` (u, v) in pixels, mapping a pixel of
  frame t to its position in frame t-1 (so frame t-1 sampled at ``p + flow(p)`` gives frame t);
  frame 0's flow is all zeros. ``read_flow_between`` gives the flow from frame t to any frame
  r (a training clip's actual previous frame, which may be several frames back or ahead).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vos.data import palette


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
    # video frames between two consecutive listed frames: 1, or 5 for YouTube-VOS's
    # JPEGImages, which keep every 5th frame (a training clip's max skip counts video frames)
    frame_step: int = 1

    @property
    def num_frames(self) -> int:
        return len(self.frame_names)

    @property
    def object_ids(self) -> list[int]:
        return sorted(self.first_frames)


class VideoSource(abc.ABC):
    """A split of videos. Implementations read lazily and raise `DatasetError` /
    `vos.data.palette.ImageReadError` with the offending path or key in the message."""

    #: For a split scored by an evaluation server: the folder, inside ``vos.eval``'s output
    #: folder, that predictions go to as ``<folder>/<video>/<frame>.png`` and that is zipped,
    #: under its own name, into ``submission.zip`` (``"Annotations"`` for YouTube-VOS, ``""``
    #: for DAVIS test-dev: the video folders at the zip's root). None: no zip, predictions in
    #: ``<output_dir>/<video>/``.
    submission_folder: str | None = None

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

    def folders(self) -> list[Path]:
        """The folders this source reads from disk (none for a generated source): commands
        refuse to write results into them."""
        return []

    def output_frames(self, video: str) -> list[int]:
        """Indices of the frames whose predictions the benchmark expects (all by default;
        YouTube-VOS segmented on all frames is scored on every 5th)."""
        return list(range(self.info(video).num_frames))

    def sampling_weights(self) -> list[float] | None:
        """How often each video (in `videos` order) is drawn for a training clip, relative to
        the others; None: all equally (a source mixing datasets repeats some, `MixedSource`)."""
        return None

    def read_flow(self, video: str, index: int) -> np.ndarray | None:
        """Backward flow ``float32 [2, H, W]`` (t -> t-1), or None when the source has none."""
        return None

    def read_flow_between(self, video: str, target: int, reference: int) -> np.ndarray | None:
        """Flow ``float32 [2, H, W]`` from frame ``target`` to frame ``reference``: where each
        pixel of ``target`` is in ``reference``. None when the source cannot give it.

        The default chains the backward flows ``target -> target-1 -> ... -> reference``
        (each sampled bilinearly, clamped at the border, where the previous step landed), so
        it needs ``reference <= target``; a source that knows the motion (the generated
        dataset) overrides it with the exact flow in both directions.
        """
        if reference > target:
            return None
        total = None
        for index in range(target, reference, -1):
            step = self.read_flow(video, index)
            if step is None:
                return None
            step = np.asarray(step, dtype=np.float32)
            total = step if total is None else total + sample_bilinear(step, total)
        if total is None:  # reference == target
            info = self.info(video)
            return np.zeros((2, info.height, info.width), dtype=np.float32)
        return total

    def __len__(self) -> int:
        return len(self.videos())


class ScannedSource(VideoSource):
    """A source whose video list is known when it is built and whose infos are worked out by
    `_scan`, once per video (on first use: scanning may read masks)."""

    def __init__(self, videos: list[str]) -> None:
        self._videos = list(videos)
        self._infos: dict[str, VideoInfo] = {}

    @abc.abstractmethod
    def _scan(self, video: str) -> VideoInfo:
        """The info of ``video``; raises `DatasetError` naming the video if it is unknown."""

    def videos(self) -> list[str]:
        return list(self._videos)

    def info(self, video: str) -> VideoInfo:
        if video not in self._infos:
            self._infos[video] = self._scan(video)
        return self._infos[video]


def sample_bilinear(field: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """``field [C, H, W]`` sampled at ``p + displacement(p)`` (``[2, H, W]``, u then v, in
    pixels), bilinearly, with positions clamped to the frame."""
    _, height, width = field.shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    x = np.clip(cols + displacement[0], 0, width - 1)
    y = np.clip(rows + displacement[1], 0, height - 1)
    # the left/top neighbour stays one short of the edge so that x1/y1 exist
    x0 = np.clip(np.floor(x), 0, max(width - 2, 0)).astype(np.int64)
    y0 = np.clip(np.floor(y), 0, max(height - 2, 0)).astype(np.int64)
    x1 = np.minimum(x0 + 1, width - 1)
    y1 = np.minimum(y0 + 1, height - 1)
    wx = x - x0
    wy = y - y0
    top = field[:, y0, x0] * (1 - wx) + field[:, y0, x1] * wx
    bottom = field[:, y1, x0] * (1 - wx) + field[:, y1, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def check_frame_index(info: VideoInfo, index: int) -> int:
    """``index`` when it is a frame of the video, else an IndexError naming the video."""
    if not 0 <= index < info.num_frames:
        raise IndexError(f"frame {index} out of range for {info.name!r} ({info.num_frames})")
    return index


def read_sized_frame(path: Path, info: VideoInfo) -> np.ndarray:
    """The frame at ``path``; every frame of a video must have its first frame's size."""
    frame = palette.read_frame(path)
    if frame.shape[:2] != (info.height, info.width):
        raise DatasetError(
            f"frame {path} is {frame.shape[1]}x{frame.shape[0]} (WxH) but the video's first "
            f"frame is {info.width}x{info.height}"
        )
    return frame


def read_sized_mask(path: Path, height: int, width: int) -> np.ndarray:
    """The label map at ``path`` (RGB and corrupt files refused, naming the path), which must
    have its frame's size."""
    mask = palette.read_mask(path)
    if mask.shape != (height, width):
        raise DatasetError(
            f"mask {path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its frame is "
            f"{width}x{height}"
        )
    return mask


def describe_folder(path: Path, limit: int = 8) -> str:
    """What a folder holds, for error messages: ``"holds a/, b/, c.txt"`` (folders first,
    at most ``limit`` names), ``"is empty"``, or ``"does not exist"``."""
    if not path.is_dir():
        return "does not exist" if not path.exists() else "is a file, not a folder"
    entries = sorted(path.iterdir(), key=lambda entry: (not entry.is_dir(), entry.name))
    if not entries:
        return "is empty"
    names = [f"{entry.name}/" if entry.is_dir() else entry.name for entry in entries[:limit]]
    more = f" and {len(entries) - limit} more" if len(entries) > limit else ""
    return "holds " + ", ".join(names) + more


def nested_root_hint(root: Path, marker: str) -> str:
    """``" (did you mean <root>/<child>?)"`` when a folder one level down holds ``marker``
    (an archive extracted into a folder of its own), else ``""``."""
    if not root.is_dir():
        return ""
    for child in sorted(root.iterdir()):
        if child.is_dir() and (child / marker).exists():
            return f" (did you mean {child}?)"
    return ""
