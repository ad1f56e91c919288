"""Which objects a video's frames hold, and when each joins.

Semi-supervised protocol: an object's mask is given at the first frame where it appears
(frame 0 for DAVIS; later frames for YouTube-VOS-style late objects). The network keeps one
channel per active object, in the order the objects joined; `ObjectTable` maps between those
channels and the dataset's object ids.
"""

from __future__ import annotations

import numpy as np

from vos.data.source import VideoInfo


class ObjectTable:
    def __init__(self, info: VideoInfo):
        self._joins: dict[int, list[int]] = {}
        for obj_id, first in sorted(info.first_frames.items()):
            self._joins.setdefault(first, []).append(obj_id)
        self.active: list[int] = []  # object ids in channel order
        self._lut = np.zeros(1, dtype=np.uint8)

    def joining(self, t: int) -> list[int]:
        """Ids of the objects whose first mask is at frame ``t``."""
        return self._joins.get(t, [])

    def join(self, ids: list[int]) -> None:
        self.active.extend(ids)
        self._lut = np.array([0, *self.active], dtype=np.uint8)

    def to_ids(self, channels: np.ndarray) -> np.ndarray:
        """Label map of channel indices (0 background, i = the i-th active object) -> ids."""
        return self._lut[channels]
