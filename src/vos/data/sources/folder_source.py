"""What the sources read from folders on disk share (DAVIS, YouTube-VOS, static images).

`FolderVideoSource` reads a video's frames and masks as files: a subclass gives the
layout (`FolderVideoSource.frame_path`, `FolderVideoSource.mask_path`), its checks and its
`_scan`; the base reads frames and masks at the video's size and refuses a mask for a
frame that has none. The helpers name files in error messages and list folders.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from vos.data import palette
from vos.data.palette import VOID_LABEL
from vos.data.source import (
    DatasetError,
    ScannedSource,
    check_frame_index,
    read_sized_frame,
    read_sized_mask,
)

SHOWN = 5  # how many names an error lists


def listing(names: Sequence[str]) -> str:
    """``"a, b, c, d, e and 3 more"``: the first `SHOWN` names, for error messages."""
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def file_stems(folder: Path, suffix: str) -> list[str]:
    """The stems of the files ``*<suffix>`` in ``folder``, sorted (none if it is missing)."""
    return sorted(path.stem for path in folder.glob(f"*{suffix}") if path.is_file())


def frame_stems(video: str, frames_dir: Path) -> list[str]:
    """The stems of the ``.jpg`` frames of ``video`` in ``frames_dir``, sorted; a video
    without frames is an error."""
    names = file_stems(frames_dir, ".jpg")
    if not names:
        raise DatasetError(f"video {video!r} has no frames (*.jpg) in {frames_dir}")
    return names


def object_labels(mask: np.ndarray) -> list[int]:
    """The object ids (1..254) present in a label map, in increasing order."""
    counts = np.bincount(mask.ravel(), minlength=256)[1:VOID_LABEL]
    return [int(label) for label in np.flatnonzero(counts) + 1]


class FolderVideoSource(ScannedSource):
    """Videos stored as one image file a frame and one mask file an annotated frame.

    A subclass gives the layout (`frame_path`, `mask_path`) and `_scan`, whose info names
    the frames (file stems) and the annotated ones; `_read_mask_file` converts masks where a
    dataset stores them otherwise (DAVIS 2016's single object)."""

    @abc.abstractmethod
    def frame_path(self, video: str, frame_name: str) -> Path: ...

    @abc.abstractmethod
    def mask_path(self, video: str, frame_name: str) -> Path: ...

    def read_frame(self, video: str, index: int) -> np.ndarray:
        info = self.info(video)
        name = info.frame_names[check_frame_index(info, index)]
        return read_sized_frame(self.frame_path(video, name), info)

    def read_mask(self, video: str, index: int) -> np.ndarray:
        info = self.info(video)
        name = info.frame_names[check_frame_index(info, index)]
        path = self.mask_path(video, name)
        if index not in info.annotated:
            raise DatasetError(f"frame {index} of {video!r} has no mask: {path} does not exist")
        return self._read_mask_file(path, info.height, info.width)

    # -- for subclasses ---------------------------------------------------------------------

    def _read_mask_file(self, path: Path, height: int, width: int) -> np.ndarray:
        """The label map at ``path``, which must be ``height x width``."""
        return read_sized_mask(path, height, width)

    def _first_frame_size(self, video: str, frame_names: list[str]) -> tuple[int, int]:
        """``(height, width)`` of the video: that of its first frame."""
        height, width = palette.read_frame(self.frame_path(video, frame_names[0])).shape[:2]
        return height, width

    def _mask_labels(
        self, video: str, frame_names: list[str], indices: list[int], height: int, width: int
    ) -> Iterator[tuple[int, Path, list[int]]]:
        """``(index, mask path, object ids)`` of the masks of frames ``indices``, read in
        that order."""
        for index in indices:
            path = self.mask_path(video, frame_names[index])
            yield index, path, object_labels(self._read_mask_file(path, height, width))
