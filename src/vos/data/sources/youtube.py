"""The YouTube-VOS folder layout (2018 and 2019 share it): reading a split of videos.

::

    root/<split>/JPEGImages/<video>/<frame>.jpg        every 5th frame of the video (00000, 00005, ...)
    root/<split>/Annotations/<video>/<frame>.png       palette PNGs; object ids as in meta.json
    root/<split>/meta.json                             {"videos": {video: {"objects": {"1":
                                                         {"category": ..., "frames": [...]}}}}}
    root/<split>_all_frames/JPEGImages/<video>/...     every frame (separate download, optional)

``train`` has a mask for every frame of its JPEGImages (so for every 5th video frame); ``valid``
(and ``test``) give each object's mask only at the frame where it first appears, which may be
after the first frame: those objects join the inference there (`VideoInfo.first_frames`). An
object's first frame is the first entry of its ``frames`` in meta.json; its mask there must
contain it. Object ids are whatever meta.json says (they may skip numbers: ``1`` and ``3``).

Predictions are scored by the YouTube-VOS server: `python -m vos.eval` writes them to
``Annotations/<video>/<frame>.png`` for the frames of ``<split>/JPEGImages`` (also when it
segments every frame of ``<split>_all_frames``) and zips that folder (`submission_folder`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vos.data.palette import VOID_LABEL
from vos.data.source import DatasetError, VideoInfo, describe_folder, nested_root_hint
from vos.data.sources.folder_source import FolderVideoSource, file_stems, frame_stems, listing


def _frame_step(frame_names: list[str]) -> int:
    """Video frames between consecutive listed frames, from numeric frame names (1 when the
    names are not numbers)."""
    if len(frame_names) < 2 or not all(name.isdigit() for name in frame_names):
        return 1
    steps = np.diff([int(name) for name in frame_names])
    return max(1, int(np.median(steps)))


class YouTubeVOSSource(FolderVideoSource):
    """A split (``train``, ``valid`` or ``test``) of a YouTube-VOS root.

    ``all_frames``: read the frames from ``<split>_all_frames/JPEGImages`` (every video frame)
    rather than ``<split>/JPEGImages``; masks stay those of ``<split>/Annotations``, so only
    every 5th frame (train) or the objects' first frames (valid) are annotated, and
    `output_frames` keeps the frames of ``<split>/JPEGImages``.

    Checks on listings and meta.json run in the constructor and `info`; `info` also reads
    each object's first mask, and every mask of a split annotated only where objects first
    appear (valid, test): an object must be in the mask of its first frame and in no earlier
    one, and masks may hold only meta.json's ids. Frame and mask sizes are checked when read.
    Infos are cached.
    """

    submission_folder = "Annotations"

    def __init__(self, root: str | Path, split: str = "valid", all_frames: bool = False) -> None:
        self.root = Path(root)
        self.split = str(split)
        self.all_frames = bool(all_frames)
        self.split_dir = self.root / self.split
        self.annotations_dir = self.split_dir / "Annotations"
        self.split_images_dir = self.split_dir / "JPEGImages"
        self.meta_path = self.split_dir / "meta.json"
        self.images_dir = (
            self.root / f"{self.split}_all_frames" / "JPEGImages"
            if self.all_frames
            else self.split_images_dir
        )
        self._check_folders()
        self._objects = self._read_meta()  # video -> {object id: first frame name}
        super().__init__(sorted(self._objects))
        self._check_videos_match()

    # -- validation of the layout (listings and meta.json) ----------------------------------

    def _check_folders(self) -> None:
        root = self.root
        if not root.is_dir():
            raise DatasetError(f"YouTube-VOS root not found: {root}")
        expected = (
            f"expected a YouTube-VOS layout, <root>/{self.split}/JPEGImages/<video>/, "
            f"<root>/{self.split}/Annotations/<video>/ and <root>/{self.split}/meta.json"
        )
        if not self.split_dir.is_dir():
            hint = nested_root_hint(root, self.split)
            if (root / "JPEGImages").is_dir() and (root / "meta.json").is_file():
                hint = f" (a split folder: did you mean {root.parent}, with split={root.name!r}?)"
            elif (root / "JPEGImages").is_dir():
                hint = " (a DAVIS layout: use dataset=davis2017 or davis2016)"
            raise DatasetError(
                f"split folder not found: {self.split_dir} ({expected}; found: {root} "
                f"{describe_folder(root)}{hint})"
            )
        for path, kind in (
            (self.split_images_dir, "folder"),
            (self.annotations_dir, "folder"),
            (self.meta_path, "file"),
        ):
            exists = path.is_file() if kind == "file" else path.is_dir()
            if not exists:
                raise DatasetError(
                    f"{path.name} {kind} not found: {path} ({expected}; found: {self.split_dir} "
                    f"{describe_folder(self.split_dir)})"
                )
        if self.all_frames and not self.images_dir.is_dir():
            raise DatasetError(
                f"all_frames is set but {self.images_dir} does not exist (the "
                f"{self.split}_all_frames download, extracted next to {self.split_dir}; found: "
                f"{root} {describe_folder(root)})"
            )

    def _read_meta(self) -> dict[str, dict[int, str]]:
        path = self.meta_path
        try:
            meta = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DatasetError(f"{path} is not valid JSON: {error}") from error
        videos = meta.get("videos") if isinstance(meta, dict) else None
        if not isinstance(videos, dict):
            raise DatasetError(f'{path} has no "videos" mapping (expected {{"videos": {{...}}}})')
        objects: dict[str, dict[int, str]] = {}
        for video, entry in videos.items():
            key = f"{path}: videos/{video}"
            if not isinstance(entry, dict) or not isinstance(entry.get("objects"), dict):
                raise DatasetError(f'{key} has no "objects" mapping')
            if not entry["objects"]:
                raise DatasetError(f"{key}/objects is empty: the video has no object to segment")
            objects[video] = {}
            for object_id, obj in entry["objects"].items():
                where = f"{key}/objects/{object_id}"
                if not str(object_id).isdigit() or not 0 < int(object_id) < VOID_LABEL:
                    raise DatasetError(f"{where}: object ids must be integers 1..254")
                frames = obj.get("frames") if isinstance(obj, dict) else None
                if not isinstance(frames, list) or not frames:
                    raise DatasetError(f'{where} has no "frames" list (the frames it is in)')
                objects[video][int(object_id)] = str(frames[0])
        if not objects:
            raise DatasetError(f"{path} lists no videos")
        return objects

    def _check_videos_match(self) -> None:
        """meta.json and the folders must name the same videos."""
        listed = set(self._videos)
        problems = []
        folders = [("frames", self.split_images_dir), ("annotations", self.annotations_dir)]
        if self.all_frames:
            folders.append(("all frames", self.images_dir))
        for kind, folder in folders:
            on_disk = {path.name for path in folder.iterdir() if path.is_dir()}
            missing = sorted(listed - on_disk)
            if missing:
                problems.append(f"{len(missing)} without {kind} in {folder}: {listing(missing)}")
            extra = sorted(on_disk - listed)
            if extra and kind != "all frames":
                problems.append(
                    f"{len(extra)} folders in {folder} are not in meta.json: {listing(extra)}"
                )
        if problems:
            raise DatasetError(f"{self.meta_path} and the folders disagree; " + "; ".join(problems))

    # -- FolderVideoSource ------------------------------------------------------------------

    def frame_path(self, video: str, frame_name: str) -> Path:
        return self.images_dir / video / f"{frame_name}.jpg"

    def mask_path(self, video: str, frame_name: str) -> Path:
        return self.annotations_dir / video / f"{frame_name}.png"

    def output_frames(self, video: str) -> list[int]:
        """The frames of ``<split>/JPEGImages``: those the server scores."""
        info = self.info(video)
        if not self.all_frames:
            return list(range(info.num_frames))
        wanted = set(file_stems(self.split_images_dir / video, ".jpg"))
        return [index for index, name in enumerate(info.frame_names) if name in wanted]

    # -- helpers ----------------------------------------------------------------------------

    def folders(self) -> list[Path]:
        return [self.root]

    def _scan(self, video: str) -> VideoInfo:
        if video not in self._objects:
            raise DatasetError(f"unknown video {video!r}: not in {self.meta_path}")
        frames_dir = self.images_dir / video
        frame_names = frame_stems(video, frames_dir)
        index_of = {name: index for index, name in enumerate(frame_names)}
        split_names = (
            file_stems(self.split_images_dir / video, ".jpg") if self.all_frames else frame_names
        )
        if self.all_frames:
            absent = [n for n in split_names if n not in index_of]
            if absent:
                raise DatasetError(
                    f"{frames_dir} lacks {len(absent)} frames that "
                    f"{self.split_images_dir / video} has: {listing(absent)}"
                )
        masks_dir = self.annotations_dir / video
        mask_names = file_stems(masks_dir, ".png")
        orphans = [name for name in mask_names if name not in index_of]
        if orphans:
            raise DatasetError(
                f"video {video!r}: {len(orphans)} masks in {masks_dir} have no frame in "
                f"{frames_dir}: {listing([f'{name}.png' for name in orphans])}"
            )
        if not mask_names:
            raise DatasetError(f"video {video!r} has no masks (*.png) in {masks_dir}")
        annotated = sorted(index_of[name] for name in mask_names)

        first_frames: dict[int, int] = {}
        for object_id, name in sorted(self._objects[video].items()):
            where = f"{self.meta_path}: videos/{video}/objects/{object_id}"
            if name not in index_of:
                raise DatasetError(
                    f"{where} first appears in frame {name!r}, but {self.frame_path(video, name)} "
                    "does not exist"
                )
            if name not in mask_names:
                raise DatasetError(
                    f"{where} first appears in frame {name!r}, but its mask "
                    f"{self.mask_path(video, name)} does not exist"
                )
            first_frames[object_id] = index_of[name]

        height, width = self._first_frame_size(video, frame_names)
        # valid/test masks (objects' first frames only) are few: all are checked; of train's
        # (one per listed frame), those of the objects' first frames
        sparse = len(mask_names) < len(split_names)
        checked = annotated if sparse else sorted(set(first_frames.values()))
        self._check_masks_against_meta(video, frame_names, first_frames, checked, height, width)
        return VideoInfo(
            name=video,
            frame_names=frame_names,
            height=height,
            width=width,
            first_frames=first_frames,
            annotated=annotated,
            frame_step=_frame_step(frame_names),
        )

    def _check_masks_against_meta(
        self,
        video: str,
        frame_names: list[str],
        first_frames: dict[int, int],
        checked: list[int],
        height: int,
        width: int,
    ) -> None:
        """Each object must be in the mask of its first frame and in no earlier one checked;
        the masks of the ``checked`` frames may hold only meta.json's ids."""
        seen: dict[int, int] = {}  # label -> earliest frame (among those read) holding it
        for index, path, labels in self._mask_labels(video, frame_names, checked, height, width):
            unknown = [label for label in labels if label not in first_frames]
            if unknown:
                raise DatasetError(
                    f"mask {path} holds object ids {unknown} that {self.meta_path} does not list "
                    f"for {video!r} (it lists {sorted(first_frames)})"
                )
            for label in labels:
                seen.setdefault(label, index)
        for object_id, first in first_frames.items():
            name = frame_names[first]
            where = f"{self.meta_path}: videos/{video}/objects/{object_id}"
            if object_id not in seen or seen[object_id] > first:
                raise DatasetError(
                    f"{where} first appears in frame {name!r}, but the mask "
                    f"{self.mask_path(video, name)} does not contain id "
                    f"{object_id}"
                )
            if seen[object_id] < first:
                earlier = self.mask_path(video, frame_names[seen[object_id]])
                raise DatasetError(
                    f"{where} first appears in frame {name!r}, but the earlier mask {earlier} "
                    f"already contains id {object_id}"
                )
