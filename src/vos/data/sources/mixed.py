"""Several sources as one training split, some repeated: YouTube-VOS + DAVIS ×5.

The papers' "+YV" models train on YouTube-VOS train and DAVIS 2017 train, DAVIS repeated 5
times so that its 60 videos are not lost among YouTube-VOS's 3471 (STCN concatenates five
copies of the DAVIS dataset with one of YouTube-VOS). `MixedSource` lists every video of its
sources once, named ``<source>/<video>`` so that names never collide, and gives each video
its source's ``repeats`` as its sampling weight (`VideoSource.sampling_weights`), which
training clips draw by: a DAVIS video is 5 times as likely as a YouTube-VOS one, the share
of DAVIS clips ``5·60 / (5·60 + 3471)``, as with five copies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from vos.data.source import DatasetError, ScannedSource, VideoInfo, VideoSource

SEPARATOR = "/"


class MixedSource(ScannedSource):
    """The videos of ``sources`` (``name -> source``, in that order), each named
    ``<name>/<video>``; ``repeats`` (``name -> weight > 0``, 1 for names left out) weighs how
    often a source's videos are drawn for training clips. Reading, flow and output frames
    are the sources' own."""

    def __init__(
        self,
        sources: Mapping[str, VideoSource],
        repeats: Mapping[str, float] | None = None,
    ) -> None:
        sources = dict(sources)
        repeats = dict(repeats or {})
        if not sources:
            raise DatasetError("MixedSource needs at least one source (dataset.train.sources)")
        for name, source in sources.items():
            if not name or SEPARATOR in name:
                raise DatasetError(
                    f"source name {name!r} must be non-empty and without {SEPARATOR!r} "
                    "(it prefixes the video names)"
                )
            if not isinstance(source, VideoSource):
                raise DatasetError(f"source {name!r} is a {type(source).__name__}, not a source")
        unknown = sorted(set(repeats) - set(sources))
        if unknown:
            raise DatasetError(
                f"repeats names sources {unknown} that are not among the sources {list(sources)}"
            )
        for name, value in repeats.items():
            if not float(value) > 0:
                raise DatasetError(f"repeats of {name!r} must be > 0; got {value!r}")
        self.sources = sources
        self.repeats = {name: float(repeats.get(name, 1)) for name in sources}
        names: list[str] = []
        self._origin: dict[str, tuple[str, str]] = {}
        for name, source in sources.items():
            for video in source.videos():
                full = f"{name}{SEPARATOR}{video}"
                names.append(full)
                self._origin[full] = (name, video)
        super().__init__(names)

    def origin(self, video: str) -> tuple[str, str]:
        """``(source name, the source's video name)`` of a mixed video name."""
        if video not in self._origin:
            raise DatasetError(
                f"unknown video {video!r}; mixed names are <source>/<video> with sources "
                f"{list(self.sources)}"
            )
        return self._origin[video]

    def sampling_weights(self) -> list[float] | None:
        # as a concatenation of `repeats` copies of each source (its own weights kept)
        weights: list[float] = []
        for name, source in self.sources.items():
            inner = source.sampling_weights() or [1.0] * len(source.videos())
            weights.extend(float(w) * self.repeats[name] for w in inner)
        return None if len(set(weights)) <= 1 else weights  # all equal: uniform

    def folders(self) -> list[Path]:
        return [folder for source in self.sources.values() for folder in source.folders()]

    def _scan(self, video: str) -> VideoInfo:
        name, inner = self.origin(video)
        return replace(self.sources[name].info(inner), name=video)

    def read_frame(self, video: str, index: int) -> np.ndarray:
        name, inner = self.origin(video)
        return self.sources[name].read_frame(inner, index)

    def read_mask(self, video: str, index: int) -> np.ndarray:
        name, inner = self.origin(video)
        return self.sources[name].read_mask(inner, index)

    def output_frames(self, video: str) -> list[int]:
        name, inner = self.origin(video)
        return self.sources[name].output_frames(inner)

    def read_flow(self, video: str, index: int) -> np.ndarray | None:
        name, inner = self.origin(video)
        return self.sources[name].read_flow(inner, index)

    def read_flow_between(self, video: str, target: int, reference: int) -> np.ndarray | None:
        name, inner = self.origin(video)
        return self.sources[name].read_flow_between(inner, target, reference)
