"""The DAVIS folder layout: reading frames and palette masks, writing predictions.

DAVIS 2017 (multi-object) and DAVIS 2016 (one object per video) share the folders
``JPEGImages/<resolution>/<video>/`` and ``Annotations/<resolution>/<video>/``; they differ in
their video lists and masks:

- DAVIS 2017: ``ImageSets/2017/<split>.txt``, one video a line; palette masks whose indices
  are object ids (255 = void).
- DAVIS 2016, its own download: ``ImageSets/<resolution>/<split>.txt``, one frame a line
  (``/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png``); binary masks
  (0 and 255, or 0 and 1): any non-zero value is the object.
- DAVIS 2016 from a DAVIS 2017 root: ``ImageSets/2016/<split>.txt``, one video a line,
  read with the DAVIS 2017 masks, whose objects (1..254) are merged into one (255 stays void).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vos.data import palette
from vos.data.palette import VOID_LABEL
from vos.data.source import DatasetError, VideoInfo, describe_folder, nested_root_hint
from vos.data.sources.folder_source import (
    SHOWN,
    FolderVideoSource,
    file_stems,
    frame_stems,
    listing,
)

# DAVIS splits scored by the evaluation server: only first-frame masks are public
SERVER_SPLITS = ("test-dev", "test-challenge")


@dataclass(frozen=True)
class DavisLayout:
    """Where things live in a DAVIS-layout dataset root.

    root/JPEGImages/<resolution>/<video>/<frame>.jpg
    root/Annotations/<resolution>/<video>/<frame>.png   (palette PNGs, DAVIS palette)
    root/ImageSets/<year>/<split>.txt                   (one video name a line)
    root/ImageSets/<resolution>/<split>.txt             (DAVIS 2016's own download: one frame
                                                         a line)
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

    def image_set_candidates(self, split: str) -> list[Path]:
        """Where a split's list may be, in the order looked for: DAVIS 2016's lists are
        ``ImageSets/2016/`` in a DAVIS 2017 root, ``ImageSets/<resolution>/`` in its own."""
        candidates = [self.image_set(split)]
        if self.year == "2016":
            candidates.append(self.root / "ImageSets" / self.resolution / f"{split}.txt")
        return candidates

    def frame_path(self, video: str, frame_name: str) -> Path:
        return self.images_dir / video / f"{frame_name}.jpg"

    def mask_path(self, video: str, frame_name: str) -> Path:
        return self.annotations_dir / video / f"{frame_name}.png"


class DavisSource(FolderVideoSource):
    """A split of a DAVIS-layout dataset (DAVIS 2016/2017, or other data in that layout).

    Videos come from ``ImageSets/<year>/<split>.txt`` or, with ``split=None``, are every
    folder of ``JPEGImages/<resolution>/`` (a DAVIS-layout folder without ImageSets); a
    video's frames are the ``.jpg`` files of ``JPEGImages/<resolution>/<video>`` sorted by
    name; its masks are ``Annotations/<resolution>/<video>/<frame>.png`` (palette or
    grayscale PNGs).

    ``require_all_masks``: True for ground truth (train/val), where every frame must have its
    mask; False for test-dev or inference, where only the first frame's mask is required.

    ``year="2016"`` reads DAVIS 2016 (see the module docstring): its list from
    ``ImageSets/2016/`` or, failing that, ``ImageSets/<resolution>/``, and every mask as one
    object (``single_object``, which defaults to ``year == "2016"``).

    Objects are the labels 1..254 of the first frame's mask, plus ids that first appear in a
    later mask (YouTube-style late objects), each with the index of its first annotated frame;
    ids need not be consecutive (they are kept as they are). ``late_objects=False`` makes such
    an object an error in a video whose every frame has its mask (DAVIS ground truth gives
    all objects in frame 0), unless ``factors.json`` marks the video ``"late_objects": true``
    (as the generated dataset's export does).

    Checks that need only directory listings run in the constructor and `info`; pixel checks
    (mode, size, corruption) run when an image is read, the first frame and all masks being
    read by `info` (it must find the late objects). Infos are cached.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = "val",
        resolution: str = "480p",
        year: str = "2017",
        require_all_masks: bool = True,
        single_object: bool | None = None,
        late_objects: bool = True,
    ) -> None:
        self.layout = DavisLayout(Path(root), resolution=str(resolution), year=str(year))
        self.split = split
        self.require_all_masks = require_all_masks
        self.single_object = self.layout.year == "2016" if single_object is None else single_object
        self.late_objects = late_objects
        self._check_folders()
        # split=None reads every video folder: there is no list
        self.image_set_path = None if split is None else self._find_image_set()
        # DAVIS 2016's own lists come with binary masks (255 = the object, not void)
        self.binary_masks = (
            self.image_set_path is not None
            and self.image_set_path.parent.name == self.layout.resolution
        )
        self._listed_frames: dict[str, list[str]] = {}
        super().__init__(self._video_folders() if split is None else self._read_image_set())
        self._check_videos_exist()
        self._factors = self._read_factors()

    def folders(self) -> list[Path]:
        return [self.layout.root]

    @property
    def submission_folder(self) -> str | None:
        # test-dev / test-challenge are scored by the DAVIS server: video folders at the zip root
        return "" if self.split in SERVER_SPLITS else None

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
                if folder.parent.is_dir():
                    found = f"{folder.parent} {describe_folder(folder.parent)}"
                else:
                    found = f"{root} {describe_folder(root)}{nested_root_hint(root, kind)}"
                    if any((root / split / kind).is_dir() for split in ("train", "valid")):
                        found += "; a YouTube-VOS layout: use dataset=youtube2019 (or 2018)"
                raise DatasetError(
                    f"{kind} folder not found: {folder} (expected a DAVIS layout, "
                    f"<root>/{kind}/<resolution>/<video>/ with "
                    f"resolution={self.layout.resolution!r}; found: {found})"
                )

    def _find_image_set(self) -> Path:
        candidates = self.layout.image_set_candidates(self.split)
        for path in candidates:
            if path.is_file():
                return path
        image_sets = self.layout.root / "ImageSets"
        raise DatasetError(
            f"image set not found: {' or '.join(str(path) for path in candidates)} "
            f"(split={self.split!r}, year={self.layout.year!r}; {image_sets} "
            f"{describe_folder(image_sets)})"
        )

    @property
    def video_list(self) -> Path:
        """Where the video names come from, for messages: the image set, or the frames'
        folder when every video is read."""
        return self.layout.images_dir if self.image_set_path is None else self.image_set_path

    def _video_folders(self) -> list[str]:
        """Every video folder of ``JPEGImages/<resolution>/``, sorted (``split=None``)."""
        folder = self.layout.images_dir
        videos = sorted(path.name for path in folder.iterdir() if path.is_dir())
        if not videos:
            raise DatasetError(f"no video folders in {folder} ({describe_folder(folder)})")
        return videos

    def _read_image_set(self) -> list[str]:
        """Video names, in order, from a list of names or of DAVIS 2016 frame lines
        (``/JPEGImages/480p/<video>/<frame>.jpg /Annotations/480p/<video>/<frame>.png``);
        the frames such a list names are kept to check against the folders."""
        path = self.image_set_path
        videos: list[str] = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if "/" not in fields[0]:
                videos.append(fields[0])
                continue
            parts = fields[0].strip("/").split("/")
            if len(parts) != 4 or parts[0] != "JPEGImages" or not parts[3].endswith(".jpg"):
                raise DatasetError(
                    f"{path} line {number}: expected a video name or "
                    f"'/JPEGImages/<resolution>/<video>/<frame>.jpg ...', got {line.strip()!r}"
                )
            video, frame_name = parts[2], parts[3][: -len(".jpg")]
            videos.append(video)
            self._listed_frames.setdefault(video, []).append(frame_name)
        # a name listed twice is still one video
        videos = list(dict.fromkeys(videos))
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
                f"videos {'listed' if self.image_set_path else 'found'} in {self.video_list} "
                "are missing on disk; " + "; ".join(problems)
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

    # -- FolderVideoSource ------------------------------------------------------------------

    def frame_path(self, video: str, frame_name: str) -> Path:
        return self.layout.frame_path(video, frame_name)

    def mask_path(self, video: str, frame_name: str) -> Path:
        return self.layout.mask_path(video, frame_name)

    def _read_mask_file(self, path: Path, height: int, width: int) -> np.ndarray:
        mask = super()._read_mask_file(path, height, width)
        if self.single_object:
            if self.binary_masks:  # DAVIS 2016: 0 and 255 (or 1); no void
                return (mask != 0).astype(np.uint8)
            merged = ((mask != 0) & (mask != VOID_LABEL)).astype(np.uint8)
            merged[mask == VOID_LABEL] = VOID_LABEL
            return merged
        return mask

    def _scan(self, video: str) -> VideoInfo:
        if video not in self._videos:
            raise DatasetError(f"unknown video {video!r}: not listed in {self.video_list}")
        frames_dir = self.layout.images_dir / video
        frame_names = frame_stems(video, frames_dir)
        unlisted = sorted(set(self._listed_frames.get(video, ())) - set(frame_names))
        if unlisted:
            raise DatasetError(
                f"{self.image_set_path} lists {len(unlisted)} frames of {video!r} that are not "
                f"in {frames_dir}: "
                + ", ".join(str(self.frame_path(video, name)) for name in unlisted[:SHOWN])
            )
        mask_names = set(file_stems(self.layout.annotations_dir / video, ".png"))
        annotated = [index for index, name in enumerate(frame_names) if name in mask_names]
        missing = [name for name in frame_names if name not in mask_names]
        if self.require_all_masks and missing:
            raise DatasetError(
                f"video {video!r}: {len(missing)} frames have no mask (all are required): "
                + listing([str(self.mask_path(video, name)) for name in missing])
            )
        if not annotated or annotated[0] != 0:
            raise DatasetError(
                f"video {video!r}: the first frame's mask is missing: "
                f"{self.mask_path(video, frame_names[0])}"
            )

        height, width = self._first_frame_size(video, frame_names)
        first_frames: dict[int, int] = {}
        for index, path, labels in self._mask_labels(video, frame_names, annotated, height, width):
            if index == 0 and not labels:
                raise DatasetError(
                    f"video {video!r}: the first frame's mask {path} contains no object "
                    "(only background or void)"
                )
            for label in labels:
                first_frames.setdefault(label, index)
        self._check_late_objects(video, frame_names, annotated, first_frames)
        return VideoInfo(
            name=video,
            frame_names=frame_names,
            height=height,
            width=width,
            first_frames=first_frames,
            annotated=annotated,
            factors=dict(self._factors.get(video, {})),
        )

    def _check_late_objects(
        self,
        video: str,
        frame_names: list[str],
        annotated: list[int],
        first_frames: dict[int, int],
    ) -> None:
        """With ``late_objects=False``, ground truth (every frame annotated) must give every
        object in frame 0, unless factors.json declares the video's late objects."""
        if self.late_objects or len(annotated) != len(frame_names):
            return
        if self._factors.get(video, {}).get("late_objects"):
            return
        late = {obj: first for obj, first in first_frames.items() if first > 0}
        if late:
            obj, first = min(late.items(), key=lambda item: item[1])
            raise DatasetError(
                f"video {video!r}: object {obj} first appears in "
                f"{self.mask_path(video, frame_names[first])}, not in the first frame's "
                f"mask {self.mask_path(video, frame_names[0])}; DAVIS ground truth gives "
                f"every object in frame 0 (objects {sorted(late)} join later). Set "
                "dataset.late_objects=true for data whose objects may join later"
            )


def write_prediction(
    output_dir: str | Path, video: str, frame_name: str, labels: np.ndarray
) -> Path:
    """Write one predicted label map as ``<output_dir>/<video>/<frame_name>.png``: a palette
    PNG with the DAVIS palette, at the size given (pass the original frame size)."""
    path = Path(output_dir) / video / f"{frame_name}.png"
    palette.write_mask(path, labels)
    return path
