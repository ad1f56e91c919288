"""`SyntheticSource`: a split of procedural videos as a `VideoSource`, rendered on demand.

Which factors each video stages follows a low-discrepancy (Weyl) sequence over the video
index, so each staged factor covers its probability's share of any split: there is no luck of
the draw on small splits. Train and val videos get their seeds from
``SeedSequence([seed, split word, index])``, so no val video is a train video.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from vos.data.source import DatasetError, VideoInfo, VideoSource
from vos.data.synthetic.factors import FACTOR_NAMES, Measurement
from vos.data.synthetic.scene import SyntheticScene

SPLITS: tuple[str, ...] = ("train", "val")
# the metrics skip the first and last frame, and the factors need time to happen
MIN_VAL_FRAMES = 30

# Seeds of the two splits differ by this entropy word, so train and val never share a video.
_SPLIT_WORDS = {split: int.from_bytes(split.encode(), "little") for split in SPLITS}
# Irrational steps (fractional parts of sqrt of primes) for the per-factor Weyl sequences.
_WEYL_STEPS = {name: math.sqrt(prime) % 1.0 for name, prime in zip(FACTOR_NAMES, (2, 3, 5, 7, 11))}
# SyntheticScene's keyword arguments a source passes on to every scene
_SCENE_KNOBS = {
    "max_objects",
    "max_distractors",
    "distractor_prob",
    "fast_motion_prob",
    "late_object_prob",
    "leave_frame_prob",
    "occlusion_prob",
    "min_object_size",
    "max_object_size",
    "motion_speed",
    "pan_speed",
    "scale_change",
    "spin",
    "shapes",
    "articulated_prob",
    "limb_swing",
    "wobble",
    "textures",
    "zoom",
    "lighting",
    "motion_blur",
    "noise",
    "jpeg_quality",
    "distractor_crossing",
}


def video_seed(seed: int, split: str, index: int) -> int:
    """The scene seed of video ``index`` of ``split``: the split is an entropy word, so a val
    video never equals a train video, whatever ``seed``."""
    if split not in _SPLIT_WORDS:
        raise DatasetError(
            f"unknown split {split!r} for the synthetic dataset; use one of {SPLITS}"
        )
    state = np.random.SeedSequence([int(seed), _SPLIT_WORDS[split], int(index)]).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


class SyntheticSource(VideoSource):
    """A split (``"train"`` or ``"val"``) of ``num_videos`` procedural videos named
    ``syn_<split>_0000`` and up, rendered on demand.

    ``knobs`` are `SyntheticScene`'s keyword arguments (``max_objects``, ``distractor_prob``,
    ...); ``scene`` holds them as a dict, or names a preset (``"simple"``, ``"realistic"``). Which factors each video stages follows a low-discrepancy sequence over the video
    index, so a split of N videos stages each factor in about ``prob * N`` of them; the factors
    reported are measured. Val videos need at least 30 frames (the metrics skip the first and
    last frame, and the factors need time to happen). Infos and measurements are kept for every
    video; scenes in a small LRU cache of ``cache_size``; rendered frames and label maps, where
    ``frame_cache_mb`` > 0, in an LRU cache of that many MiB (per process: each loader worker
    keeps its own). A frame is a function of its video and index alone, so a cached one is the
    frame rendering it again would give; training draws each of a split's frames several times
    (4000 steps of 4 three-frame clips draw 48000 frames of 400 × 40), and most of a clip's
    time is rendering.
    """

    def __init__(
        self,
        split: str,
        num_videos: int,
        num_frames: int,
        seed: int = 0,
        height: int = 128,
        width: int = 224,
        cache_size: int = 16,
        frame_cache_mb: float = 0,
        scene: Mapping[str, float | int | bool] | str | None = None,
        **knobs: float | int | bool,
    ) -> None:
        # ``scene`` (the config's dict of scene knobs, or the name of a preset in
        # conf/dataset/scene/) and keyword knobs are the same thing; keywords win.
        if isinstance(scene, str):
            scene = dataset_config_defaults(scene)["scene"]
        knobs = {**dict(scene or {}), **knobs}
        if split not in SPLITS:
            raise DatasetError(
                f"unknown split {split!r} for the synthetic dataset; use one of {SPLITS}"
            )
        if int(num_videos) < 1:
            raise DatasetError(f"num_videos must be >= 1; got {num_videos}")
        if split == "val" and int(num_frames) < MIN_VAL_FRAMES:
            raise DatasetError(
                f"num_frames must be >= {MIN_VAL_FRAMES} for the val split; got {num_frames}"
            )
        unknown = set(knobs) - _SCENE_KNOBS
        if unknown:
            raise DatasetError(
                f"unknown synthetic dataset options {sorted(unknown)}; known: {sorted(_SCENE_KNOBS)}"
            )
        self.split = split
        self.num_videos = int(num_videos)
        self.num_frames = int(num_frames)
        self.seed = int(seed)
        self.height = int(height)
        self.width = int(width)
        self.knobs = dict(knobs)
        self.cache_size = max(1, int(cache_size))
        if float(frame_cache_mb) < 0:
            raise DatasetError(f"frame_cache_mb must be >= 0; got {frame_cache_mb}")
        self.frame_cache_bytes = int(float(frame_cache_mb) * 2**20)
        self._pixels: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
        self._pixels_bytes = 0
        # validate the knobs once, up front, rather than at the first read
        SyntheticScene(0, height=self.height, width=self.width, num_frames=self.num_frames, **knobs)
        offsets = np.random.default_rng([self.seed, _SPLIT_WORDS[split], 1 << 20]).random(
            len(FACTOR_NAMES)
        )
        self._weyl_offsets = dict(zip(FACTOR_NAMES, offsets))
        self._names = [f"syn_{split}_{index:04d}" for index in range(self.num_videos)]
        self._index = {name: index for index, name in enumerate(self._names)}
        self._scenes: OrderedDict[int, SyntheticScene] = OrderedDict()
        self._infos: dict[int, VideoInfo] = {}
        # a few KB per video: a scene that leaves the cache is rebuilt without measuring again
        self._measurements: dict[int, Measurement] = {}

    def videos(self) -> list[str]:
        return list(self._names)

    def staged_factors(self, index: int) -> dict[str, bool]:
        """Which factors video ``index`` stages: a Weyl sequence per factor, so any run of
        videos stages each in close to its probability's share."""
        probabilities = {
            "distractors": self.knobs.get("distractor_prob", 0.4),
            "occlusion": self.knobs.get("occlusion_prob", 0.4),
            "fast_motion": self.knobs.get("fast_motion_prob", 0.4),
            "leaves_frame": self.knobs.get("leave_frame_prob", 0.4),
            "late_objects": self.knobs.get("late_object_prob", 0.4),
        }
        return {
            name: bool(
                (index * _WEYL_STEPS[name] + self._weyl_offsets[name]) % 1.0
                < float(probabilities[name])
            )
            for name in FACTOR_NAMES
        }

    def scene(self, video: str) -> SyntheticScene:
        index = self._video_index(video)
        scene = self._scenes.get(index)
        if scene is not None:
            self._scenes.move_to_end(index)
            return scene
        scene = SyntheticScene(
            video_seed(self.seed, self.split, index),
            height=self.height,
            width=self.width,
            num_frames=self.num_frames,
            staged=self.staged_factors(index),
            measurement=self._measurements.get(index),
            **self.knobs,
        )
        self._measurements[index] = scene.measurement
        self._scenes[index] = scene
        while len(self._scenes) > self.cache_size:
            self._scenes.popitem(last=False)
        return scene

    def info(self, video: str) -> VideoInfo:
        index = self._video_index(video)
        if index not in self._infos:
            scene = self.scene(video)
            self._infos[index] = VideoInfo(
                name=video,
                frame_names=[f"{t:05d}" for t in range(self.num_frames)],
                height=self.height,
                width=self.width,
                first_frames=dict(scene.first_frames),
                annotated=list(range(self.num_frames)),
                factors=dict(scene.factors),
            )
        return self._infos[index]

    def read_frame(self, video: str, index: int) -> np.ndarray:
        return self._cached("frame", video, index, lambda scene, t: scene.frame(t))

    def read_mask(self, video: str, index: int) -> np.ndarray:
        return self._cached("mask", video, index, lambda scene, t: scene.mask(t))

    def _cached(self, kind: str, video: str, t: int, render) -> np.ndarray:
        """``render(scene, t)``, from the frame cache where it holds it; a copy either way,
        so a caller may change what it gets."""
        if self.frame_cache_bytes <= 0:
            return render(self.scene(video), t)
        key = (kind, self._video_index(video), int(t))
        kept = self._pixels.get(key)
        if kept is None:
            kept = render(self.scene(video), t)
            if kept.nbytes <= self.frame_cache_bytes:
                self._pixels[key] = kept
                self._pixels_bytes += kept.nbytes
                while self._pixels_bytes > self.frame_cache_bytes:
                    _, dropped = self._pixels.popitem(last=False)
                    self._pixels_bytes -= dropped.nbytes
        else:
            self._pixels.move_to_end(key)
        return kept.copy()

    def read_flow(self, video: str, index: int) -> np.ndarray:
        return self.scene(video).flow(index)

    def read_flow_between(self, video: str, target: int, reference: int) -> np.ndarray:
        return self.scene(video).flow(target, reference)

    def _video_index(self, video: str) -> int:
        if video not in self._index:
            raise DatasetError(
                f"unknown video {video!r} in synthetic split {self.split!r} "
                f"(names are syn_{self.split}_0000 .. {self._names[-1]})"
            )
        return self._index[video]


def dataset_config_defaults(scene: str = "simple") -> dict:
    """Frame size of ``conf/dataset/synthetic.yaml`` and the knobs of its scene preset
    ``conf/dataset/scene/<scene>.yaml``: the export and the training data come from one
    definition."""
    from omegaconf import OmegaConf

    from vos.config import CONFIG_DIR

    presets = sorted(path.stem for path in (CONFIG_DIR / "dataset" / "scene").glob("*.yaml"))
    if scene not in presets:
        raise DatasetError(f"unknown scene preset {scene!r}; known: {presets}")
    cfg = OmegaConf.load(CONFIG_DIR / "dataset" / "synthetic.yaml")
    knobs = OmegaConf.load(CONFIG_DIR / "dataset" / "scene" / f"{scene}.yaml")
    return {"height": cfg.height, "width": cfg.width, "scene": OmegaConf.to_container(knobs)}
