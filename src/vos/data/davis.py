"""The DAVIS folder layout: reading frames and palette masks, writing predictions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vos.data import palette
from vos.data.palette import VOID_LABEL
from vos.data.source import DatasetError, VideoInfo, VideoSource


@dataclass(frozen=True)
class DavisLayout:
    """Where things live in a DAVIS-layout dataset root.

    root/JPEGImages/<resolution>/<video>/<frame>.jpg
    root/Annotations/<resolution>/<video>/<frame>.png   (palette PNGs, DAVIS palette)
    root/ImageSets/<year>/<split>.txt                   (one video name a line)
    """

    root: Path
    resolution: str = "480p"
    year: str = "2017"

    @property
    def images_dir(self) -> Path:
        return self.root / "JPEGImages" / self.resolution

    @property
    def annotations_dir(self) -> Path:
        return self.root / "Annotations" / self.resolution

    def image_set(self, split: str) -> Path:
        return self.root / "ImageSets" / self.year / f"{split}.txt"

    def frame_path(self, video: str, frame_name: str) -> Path:
        return self.images_dir / video / f"{frame_name}.jpg"

    def mask_path(self, video: str, frame_name: str) -> Path:
        return self.annotations_dir / video / f"{frame_name}.png"


class DavisSource(VideoSource):
    """A split of a DAVIS-layout dataset (DAVIS 2016/2017, or other data in that layout).

    Videos come from ``ImageSets/<year>/<split>.txt``; a video's frames are the ``.jpg`` files
    of ``JPEGImages/<resolution>/<video>`` sorted by name; its masks are
    ``Annotations/<resolution>/<video>/<frame>.png`` (palette or grayscale PNGs).

    ``require_all_masks``: True for ground truth (train/val), where every frame must have its
    mask; False for test-dev or inference, where only the first frame's mask is required.

    Objects are the labels 1..254 of the first frame's mask, plus ids that first appear in a
    later mask (YouTube-style late objects), each with the index of its first annotated frame.
    Checks that need only directory listings run in the constructor and `info`; pixel checks
    (mode, size, corruption) run when an image is read, the first frame and all masks being
    read by `info` (it must find the late objects). Infos are cached.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        resolution: str = "480p",
        year: str = "2017",
        require_all_masks: bool = True,
    ) -> None:
        self.layout = DavisLayout(Path(root), resolution=str(resolution), year=str(year))
        self.split = split
        self.require_all_masks = require_all_masks
        self._check_folders()
        self._videos = self._read_image_set()
        self._check_videos_exist()
        self._factors = self._read_factors()
        self._infos: dict[str, VideoInfo] = {}

    # -- validation of the layout (directory listings only) ----------------------------------

    def _check_folders(self) -> None:
        root = self.layout.root
        if not root.is_dir():
            raise DatasetError(f"DAVIS root not found: {root}")
        for kind, folder in (
            ("JPEGImages", self.layout.images_dir),
            ("Annotations", self.layout.annotations_dir),
        ):
            if not folder.is_dir():
                raise DatasetError(
                    f"{kind} folder not found: {folder} (expected "
                    f"<root>/{kind}/<resolution>/<video>/; resolution={self.layout.resolution!r})"
                )

    def _read_image_set(self) -> list[str]:
        path = self.layout.image_set(self.split)
        if not path.is_file():
            raise DatasetError(
                f"image set not found: {path} (split={self.split!r}, year={self.layout.year!r})"
            )
        names = [line.strip() for line in path.read_text().splitlines()]
        # a name listed twice is still one video
        videos = list(dict.fromkeys(name for name in names if name))
        if not videos:
            raise DatasetError(f"image set lists no videos: {path}")
        return videos

    def _check_videos_exist(self) -> None:
        problems = []
        for kind, folder in (
            ("frames", self.layout.images_dir),
            ("annotations", self.layout.annotations_dir),
        ):
            missing = [video for video in self._videos if not (folder / video).is_dir()]
            if missing:
                problems.append(f"{len(missing)} without {kind} in {folder}: {', '.join(missing)}")
        if problems:
            raise DatasetError(
                f"videos listed in {self.layout.image_set(self.split)} are missing on disk; "
                + "; ".join(problems)
            )

    def _read_factors(self) -> dict[str, dict[str, bool]]:
        path = self.layout.root / "factors.json"
        if not path.is_file():
            return {}
        try:
            factors = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DatasetError(f"factors file {path} is not valid JSON: {error}") from error
        valid = isinstance(factors, dict) and all(
            isinstance(video_factors, dict)
            and all(isinstance(value, bool) for value in video_factors.values())
            for video_factors in factors.values()
        )
        if not valid:
            raise DatasetError(f"factors file {path} must map each video to {{factor: true/false}}")
        return factors

    # -- VideoSource ------------------------------------------------------------------------

    def videos(self) -> list[str]:
        return list(self._videos)

    def info(self, video: str) -> VideoInfo:
        if video not in self._infos:
            self._infos[video] = self._scan(video)
        return self._infos[video]

    def read_frame(self, video: str, index: int) -> np.ndarray:
        info = self.info(video)
        path = self.layout.frame_path(video, info.frame_names[self._check_index(info, index)])
        frame = palette.read_frame(path)
        if frame.shape[:2] != (info.height, info.width):
            raise DatasetError(
                f"frame {path} is {frame.shape[1]}x{frame.shape[0]} (WxH) but the video's first "
                f"frame is {info.width}x{info.height}"
            )
        return frame

    def read_mask(self, video: str, index: int) -> np.ndarray:
        info = self.info(video)
        frame_name = info.frame_names[self._check_index(info, index)]
        if index not in self._annotated_set(video):
            raise DatasetError(
                f"frame {index} of {video!r} has no mask: "
                f"{self.layout.mask_path(video, frame_name)} does not exist"
            )
        return self._read_checked_mask(video, frame_name, info.height, info.width)

    # -- helpers ----------------------------------------------------------------------------

    def _check_index(self, info: VideoInfo, index: int) -> int:
        if not 0 <= index < info.num_frames:
            raise IndexError(f"frame {index} out of range for {info.name!r} ({info.num_frames})")
        return index

    def _annotated_set(self, video: str) -> set[int]:
        return set(self.info(video).annotated)

    def _read_checked_mask(
        self, video: str, frame_name: str, height: int, width: int
    ) -> np.ndarray:
        path = self.layout.mask_path(video, frame_name)
        mask = palette.read_mask(path)  # refuses RGB and corrupt files, naming the path
        if mask.shape != (height, width):
            raise DatasetError(
                f"mask {path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its frame is "
                f"{width}x{height}"
            )
        return mask

    def _scan(self, video: str) -> VideoInfo:
        if video not in self._videos:
            raise DatasetError(
                f"unknown video {video!r}: not listed in {self.layout.image_set(self.split)}"
            )
        frames_dir = self.layout.images_dir / video
        frame_names = sorted(path.stem for path in frames_dir.glob("*.jpg") if path.is_file())
        if not frame_names:
            raise DatasetError(f"video {video!r} has no frames (*.jpg) in {frames_dir}")
        masks_dir = self.layout.annotations_dir / video
        mask_names = {path.stem for path in masks_dir.glob("*.png") if path.is_file()}
        annotated = [index for index, name in enumerate(frame_names) if name in mask_names]
        missing = [name for name in frame_names if name not in mask_names]
        if self.require_all_masks and missing:
            shown = ", ".join(str(self.layout.mask_path(video, name)) for name in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DatasetError(
                f"video {video!r}: {len(missing)} frames have no mask (all are required): "
                f"{shown}{more}"
            )
        if not annotated or annotated[0] != 0:
            raise DatasetError(
                f"video {video!r}: the first frame's mask is missing: "
                f"{self.layout.mask_path(video, frame_names[0])}"
            )

        height, width = palette.read_frame(self.layout.frame_path(video, frame_names[0])).shape[:2]
        first_frames: dict[int, int] = {}
        for index in annotated:
            mask = self._read_checked_mask(video, frame_names[index], height, width)
            labels = np.flatnonzero(np.bincount(mask.ravel(), minlength=256)[1:VOID_LABEL]) + 1
            if index == 0 and len(labels) == 0:
                raise DatasetError(
                    f"video {video!r}: the first frame's mask "
                    f"{self.layout.mask_path(video, frame_names[0])} contains no object "
                    "(only background or void)"
                )
            for label in labels:
                first_frames.setdefault(int(label), index)
        return VideoInfo(
            name=video,
            frame_names=frame_names,
            height=height,
            width=width,
            first_frames=first_frames,
            annotated=annotated,
            factors=dict(self._factors.get(video, {})),
        )


def write_prediction(
    output_dir: str | Path, video: str, frame_name: str, labels: np.ndarray
) -> Path:
    """Write one predicted label map as ``<output_dir>/<video>/<frame_name>.png``: a palette
    PNG with the DAVIS palette, at the size given (pass the original frame size)."""
    path = Path(output_dir) / video / f"{frame_name}.png"
    palette.write_mask(path, labels)
    return path
