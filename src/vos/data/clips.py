"""Training clips sampled from any `VideoSource`, deterministic by sample index.

Sample ``i`` is a pure function of (seed, i): its video, frames, objects and augmentation
come from a generator seeded with both. Resuming at sample ``k`` therefore replays exactly
the data an uninterrupted run would have seen, and the max-skip curriculum is a function of
``i / length`` (training progress).

Frame sampling follows STCN: a first frame, then each next frame 1..max_skip after the
previous one, with a chance of reversed time order. Only objects visible in the clip's first
frame are kept (up to ``max_objects``, chosen at random) and relabelled 1..k; other objects
become background, void (255) stays void.

``sampling`` picks the clip's frames: ``stcn`` (above); ``anywhere`` (LCM's main training:
frames drawn anywhere in the video, no temporal limit, in random order); ``window`` (LMRC:
``num_frames`` distinct frames drawn within ``window`` consecutive frames, in time order or
reversed with ``reverse_prob``); ``static`` (static-
image pre-training: one frame and random affine copies of it, `vos.data.affine`, settings
in ``static``). ``objects_in_all_frames`` keeps only objects visible in every clip frame (LCM).

Videos are drawn uniformly, or by the source's `VideoSource.sampling_weights` (datasets
repeated in a mixture: DAVIS ×5 beside YouTube-VOS, `vos.data.sources.mixed.MixedSource`).

Clips are drawn among a video's annotated frames (`VideoInfo.annotated`): the max skip and
the window count video frames, so where masks are sparse (YouTube-VOS's all-frames folders:
a mask every 5th frame) or listed frames are ``frame_step`` video frames apart (YouTube-VOS's
JPEGImages), they become steps between annotated frames, ``max_skip // 5`` as STCN does for
YouTube-VOS (at least 1). Fully annotated videos with ``frame_step`` 1 sample as before.

With ``with_flow`` (readers whose query region follows optical flow, RMNet) each clip frame
carries the flow to the clip frame before it, i.e. between the frames actually paired, not
the video's t -> t-1 flow: with skips and reversed clips those differ, the mismatch the released
RMNet code has when ``frame_step > 1`` (its issue #3).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from vos.data.affine import affine_flow, random_affine, warp_image, warp_mask
from vos.data.palette import VOID_LABEL
from vos.data.source import DatasetError, VideoInfo, VideoSource

SAMPLINGS = ("stcn", "anywhere", "window", "static")


def max_skip_at(progress: float, values: Sequence[int], milestones: Sequence[float]) -> int:
    """The curriculum's max skip at a training progress in [0, 1].

    ``values[i]`` holds from ``milestones[i]`` on (milestones ascending, first usually 0).
    """
    if len(values) != len(milestones) or not values:
        raise ValueError(
            "data.clip.max_skip.values and .milestones must have the same non-zero length"
        )
    current = values[0]
    for value, start in zip(values, milestones):
        if progress >= start:
            current = value
    return int(current)


def _cumulative_weights(source: VideoSource, count: int) -> np.ndarray | None:
    """The source's video weights as a cumulative distribution, or None when uniform."""
    weights = source.sampling_weights()
    if weights is None:
        return None
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (count,) or not np.all(np.isfinite(weights)) or (weights < 0).any():
        raise DatasetError(
            f"{type(source).__name__}.sampling_weights() must give one finite weight >= 0 per "
            f"video ({count}); got shape {weights.shape}"
        )
    if weights.sum() <= 0:
        raise DatasetError(f"{type(source).__name__}.sampling_weights() are all zero")
    return np.cumsum(weights) / weights.sum()


class ClipDataset(Dataset):
    def __init__(
        self,
        source: VideoSource,
        *,
        length: int,
        seed: int = 0,
        num_frames: int = 3,
        max_objects: int = 3,
        max_skip_values: Sequence[int] = (5,),
        max_skip_milestones: Sequence[float] = (0.0,),
        reverse_prob: float = 0.5,
        crop: Sequence[int] | None = None,
        flip_prob: float = 0.5,
        color_jitter: float = 0.1,
        frame_brightness_jitter: float = 0.02,
        sampling: str = "stcn",
        window: int = 10,
        objects_in_all_frames: bool = False,
        static: dict | None = None,
        with_flow: bool = False,
        max_attempts: int = 20,
    ):
        if num_frames < 2:
            raise ValueError(f"data.clip.num_frames must be >= 2, got {num_frames}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"data.clip.sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if sampling == "window" and window < num_frames:
            raise ValueError(
                f"data.clip.window={window} cannot hold num_frames={num_frames} distinct frames"
            )
        self.source = source
        self.videos = source.videos()
        if not self.videos:
            raise DatasetError("the training split has no videos")
        self._cumulative = _cumulative_weights(source, len(self.videos))
        self.length = length
        self.seed = seed
        self.num_frames = num_frames
        self.max_objects = max_objects
        self.max_skip_values = list(max_skip_values)
        self.max_skip_milestones = list(max_skip_milestones)
        self.reverse_prob = reverse_prob
        self.crop = tuple(crop) if crop else None
        self.flip_prob = flip_prob
        self.color_jitter = color_jitter
        self.frame_brightness_jitter = frame_brightness_jitter
        self.sampling = sampling
        self.window = window
        self.objects_in_all_frames = objects_in_all_frames
        self.static = dict(static or {})
        self.with_flow = with_flow
        self.max_attempts = max_attempts

    def __len__(self) -> int:
        return self.length

    def _draw_video(self, rng: np.random.Generator) -> int:
        """A video index: uniform, or by the source's `VideoSource.sampling_weights`."""
        if self._cumulative is None:
            return int(rng.integers(len(self.videos)))
        index = int(np.searchsorted(self._cumulative, rng.random(), side="right"))
        return min(index, len(self.videos) - 1)

    def _clip_frames(self, rng: np.random.Generator, info: VideoInfo, max_skip: int) -> list[int]:
        """A clip's frame indices, all annotated: sampled among the annotated frames with the
        skip and window converted from video frames to steps between annotated frames."""
        annotated = info.annotated
        if len(annotated) == info.num_frames and info.frame_step == 1:
            return self._frame_indices(rng, info.num_frames, max_skip)
        if not annotated:
            raise DatasetError(f"video {info.name!r} has no annotated frame to train on")
        gaps = np.diff(annotated)
        spacing = info.frame_step * (int(np.median(gaps)) if len(gaps) else 1)
        window = max(self.num_frames, self.window // spacing)
        positions = self._frame_indices(
            rng, len(annotated), max(1, max_skip // spacing), window=window
        )
        return [annotated[i] for i in positions]

    def _frame_indices(
        self, rng: np.random.Generator, num_frames: int, max_skip: int, window: int | None = None
    ) -> list[int]:
        if self.sampling == "anywhere":  # LCM's main training: no temporal limit, any order
            count = min(self.num_frames, num_frames)
            indices = [int(i) for i in rng.choice(num_frames, size=count, replace=False)]
            while len(indices) < self.num_frames:  # videos shorter than a clip repeat frames
                indices.append(int(rng.integers(num_frames)))
            return indices  # drawn without order: shuffled
        if self.sampling == "window":  # LMRC: distinct frames within `window` frames
            span = min(self.window if window is None else window, num_frames)
            start = int(rng.integers(0, num_frames - span + 1))
            count = min(self.num_frames, span)
            chosen = sorted(int(i) for i in rng.choice(span, size=count, replace=False))
            indices = [start + i for i in chosen]
            while len(indices) < self.num_frames:  # videos shorter than a clip repeat frames
                indices.append(indices[-1])
            return indices[::-1] if rng.random() < self.reverse_prob else indices
        span = min(max_skip * (self.num_frames - 1), num_frames - 1)
        start = int(rng.integers(0, num_frames - span)) if num_frames > span else 0
        indices = [start]
        for _ in range(self.num_frames - 1):
            step = int(rng.integers(1, max_skip + 1))
            indices.append(min(indices[-1] + step, num_frames - 1))
        if rng.random() < self.reverse_prob:
            indices = indices[::-1]
        return indices

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        max_skip = max_skip_at(
            index / max(self.length, 1), self.max_skip_values, self.max_skip_milestones
        )
        for _ in range(self.max_attempts):
            video = self.videos[self._draw_video(rng)]
            info = self.source.info(video)
            if self.sampling == "static":  # one annotated frame; its copies are made below
                frame_ids = [info.annotated[int(rng.integers(len(info.annotated)))]]
                frame_ids = frame_ids * self.num_frames
                flow = None
            else:
                frame_ids = self._clip_frames(rng, info, max_skip)
                flow = self._clip_flow(video, frame_ids) if self.with_flow else None
            masks = np.stack([self.source.read_mask(video, t) for t in frame_ids])
            visible = [i for i in np.unique(masks[0]) if 0 < i < VOID_LABEL]
            if self.objects_in_all_frames:
                visible = [i for i in visible if all((m == i).any() for m in masks[1:])]
            if visible:
                break
        else:
            raise DatasetError(
                f"no clip with a visible object in its first frame after {self.max_attempts} tries "
                f"(last video {video!r}); is the training split annotated?"
            )
        chosen = rng.permutation(visible)[: self.max_objects]
        if self.sampling == "static":  # the copies of the one frame, and their masks
            image = self.source.read_frame(video, frame_ids[0])
            frames, masks, flow = self._affine_copies(rng, image, masks[0])
        else:
            frames = np.stack([self.source.read_frame(video, t) for t in frame_ids])
        labels = np.zeros_like(masks, dtype=np.int64)
        for new_id, old_id in enumerate(chosen, start=1):
            labels[masks == old_id] = new_id
        labels[masks == VOID_LABEL] = VOID_LABEL
        frames = frames.astype(np.float32) / 255.0

        frames, labels, flow = self._augment(rng, frames, labels, flow)
        present = np.zeros(self.max_objects, dtype=bool)
        present[: len(chosen)] = True
        item = {
            "frames": torch.from_numpy(
                np.ascontiguousarray(frames.transpose(0, 3, 1, 2))
            ),  # [T,3,H,W]
            "labels": torch.from_numpy(np.ascontiguousarray(labels)),  # [T,H,W]
            "present": torch.from_numpy(present),
            "index": index,
        }
        if flow is not None:
            item["flow"] = torch.from_numpy(np.ascontiguousarray(flow))
        return item

    def _affine_copies(self, rng, image: np.ndarray, mask: np.ndarray):
        """Static-image clip: copy 0 is the image, copies 1.. random affine warps of it
        (`vos.data.affine`); void outside the warped image; exact flow between the copies."""
        height, width = mask.shape
        matrices = [np.eye(3)] + [
            random_affine(rng, height, width, **self.static) for _ in range(self.num_frames - 1)
        ]
        frames = np.stack([warp_image(image, m) for m in matrices])
        masks = np.stack([warp_mask(mask, m) for m in matrices])
        flow = None
        if self.with_flow:
            flows = [
                affine_flow(matrices[t], matrices[t - 1], height, width)
                for t in range(1, self.num_frames)
            ]
            flow = np.stack([np.zeros_like(flows[0]), *flows])
        return frames, masks, flow

    def _clip_flow(self, video: str, frame_ids: list[int]) -> np.ndarray:
        """``[T, 2, H, W]``: the flow from each clip frame to the clip frame before it (the
        frames the reader actually pairs, whatever the skip and direction); zeros for the
        first. A reversed clip whose source has backward flow only is put back in time order
        (``frame_ids`` is changed in place) rather than trained with the wrong flow."""
        pairs = list(zip(frame_ids[1:], frame_ids[:-1]))
        flows = [self.source.read_flow_between(video, t, r) for t, r in pairs]
        if any(f is None for f in flows) and frame_ids != sorted(frame_ids):
            frame_ids.sort()
            pairs = list(zip(frame_ids[1:], frame_ids[:-1]))
            flows = [self.source.read_flow_between(video, t, r) for t, r in pairs]
        if any(f is None for f in flows):
            raise DatasetError(
                f"video {video!r} has no optical flow between frames {frame_ids}, but the reader "
                "needs it"
            )
        return np.stack([np.zeros_like(flows[0]), *flows])

    def _augment(self, rng, frames, labels, flow):
        # Crop: one window for the whole clip, chosen to contain the first frame's objects
        # when possible (an object-aware crop, as RMNet and STCN do for small objects).
        if self.crop is not None:
            height, width = frames.shape[1:3]
            ch, cw = min(self.crop[0], height), min(self.crop[1], width)
            ys, xs = np.nonzero((labels[0] > 0) & (labels[0] != VOID_LABEL))
            y0 = int(rng.integers(0, height - ch + 1))
            x0 = int(rng.integers(0, width - cw + 1))
            if len(ys):
                pick = int(rng.integers(len(ys)))
                y0 = int(np.clip(ys[pick] - rng.integers(0, ch), 0, height - ch))
                x0 = int(np.clip(xs[pick] - rng.integers(0, cw), 0, width - cw))
            frames = frames[:, y0 : y0 + ch, x0 : x0 + cw]
            labels = labels[:, y0 : y0 + ch, x0 : x0 + cw]
            if flow is not None:
                flow = flow[:, :, y0 : y0 + ch, x0 : x0 + cw]
        if rng.random() < self.flip_prob:
            frames = frames[:, :, ::-1]
            labels = labels[:, :, ::-1]
            if flow is not None:
                flow = (
                    flow[:, :, :, ::-1]
                    * np.array([-1.0, 1.0], dtype=np.float32)[None, :, None, None]
                )
        if self.color_jitter > 0:
            # brightness and contrast per clip, tiny per-frame brightness: appearance varies
            # but the same object keeps looking like itself across the clip
            brightness = 1 + rng.uniform(-self.color_jitter, self.color_jitter)
            contrast = 1 + rng.uniform(-self.color_jitter, self.color_jitter)
            spread = self.frame_brightness_jitter
            per_frame = 1 + rng.uniform(-spread, spread, size=(len(frames), 1, 1, 1))
            mean = frames.mean(axis=(1, 2, 3), keepdims=True)
            frames = np.clip(((frames - mean) * contrast + mean) * brightness * per_frame, 0, 1)
        return frames.astype(np.float32), labels, flow


class ResumableSampler(Sampler[int]):
    """This rank's share of the indices ``0 … length-1`` (``rank, rank + world, …``), skipping
    the first ``skip`` of them on the next pass: the position of a resumed run. Its length is
    the whole share, whatever is skipped, so a run's count of batches never changes."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        self.length = length
        self.rank = rank
        self.world_size = world_size
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        first = self.rank + self.skip * self.world_size
        return iter(range(first, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))
