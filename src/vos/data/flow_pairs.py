"""Frame pairs with ground-truth backward flow: TinyFlowNet's training data (RMNet §3.3).

RMNet trains its flow network on its own, with L1 against precomputed flow (reference
§1.6); here the flow comes from any `VideoSource` whose ``read_flow`` returns arrays (the
generated dataset's exact flow, or flow files a DAVIS-layout dataset provides).

Item ``i`` is a pure function of (seed, i), like `vos.data.clips.ClipDataset`: a random video,
a random step s in 1..``max_skip`` and a random ``t >= s``; ``frame`` is frame t, ``previous``
frame t−s (float [0, 1], ``[3, H, W]``) and ``flow`` the flow t → t−s ``[2, H, W]`` in pixels
(``VideoSource.read_flow_between``), so ``warp_backward(previous, flow) ≈ frame``. Steps over 1
show the network larger motions than adjacent frames have (the generated data moves about a
pixel per frame); ``max_skip=1`` is the plain backward-flow task. Augmentation keeps that relation:

- crop: one window for both frames, so the flow vectors need no correction (the official
  ``RandomCrop`` only corrects by ``x_min_t − x_min_{t−1}`` when the windows differ);
- horizontal flip of both frames: the flow field is mirrored and u negated (official
  ``RandomFlip``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from vos.data.source import DatasetError, VideoSource


class FlowPairDataset(Dataset):
    def __init__(
        self,
        source: VideoSource,
        *,
        length: int,
        seed: int = 0,
        crop: Sequence[int] | None = None,
        flip_prob: float = 0.5,
        max_skip: int = 1,
        max_attempts: int = 20,
    ):
        if max_skip < 1:
            raise ValueError(f"model.max_skip must be >= 1, got {max_skip}")
        self.source = source
        self.videos = source.videos()
        if not self.videos:
            raise DatasetError("the flow-pair split has no videos")
        # Fail at construction, not in a worker mid-epoch, when the source has no flow.
        probe = self.videos[0]
        if source.info(probe).num_frames >= 2 and source.read_flow(probe, 1) is None:
            raise DatasetError(
                f"{type(source).__name__} provides no optical flow (read_flow returned None for "
                f"{probe!r}); TinyFlowNet training needs a dataset with flow"
            )
        self.length = int(length)
        self.seed = seed
        self.crop = tuple(crop) if crop else None
        self.flip_prob = flip_prob
        self.max_skip = max_skip
        self.max_attempts = max_attempts

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        for _ in range(self.max_attempts):
            video = self.videos[int(rng.integers(len(self.videos)))]
            num_frames = self.source.info(video).num_frames
            if num_frames >= 2:
                break
        else:
            raise DatasetError(
                f"no video with at least 2 frames after {self.max_attempts} tries "
                f"(last {video!r}); a flow pair needs frames t-1 and t"
            )
        step = int(rng.integers(1, min(self.max_skip, num_frames - 1) + 1))
        t = int(rng.integers(step, num_frames))
        flow = (
            self.source.read_flow(video, t)
            if step == 1
            else self.source.read_flow_between(video, t, t - step)
        )
        if flow is None:
            raise DatasetError(f"video {video!r} has no optical flow from frame {t} to {t - step}")
        frame = self.source.read_frame(video, t).astype(np.float32) / 255.0
        previous = self.source.read_frame(video, t - step).astype(np.float32) / 255.0
        flow = np.asarray(flow, dtype=np.float32)

        if self.crop is not None:
            height, width = frame.shape[:2]
            crop_h, crop_w = min(self.crop[0], height), min(self.crop[1], width)
            y0 = int(rng.integers(0, height - crop_h + 1))
            x0 = int(rng.integers(0, width - crop_w + 1))
            frame = frame[y0 : y0 + crop_h, x0 : x0 + crop_w]
            previous = previous[y0 : y0 + crop_h, x0 : x0 + crop_w]
            flow = flow[:, y0 : y0 + crop_h, x0 : x0 + crop_w]
        # always draw, so the same index picks the same pair and crop whatever flip_prob is
        if rng.random() < self.flip_prob:
            frame = frame[:, ::-1]
            previous = previous[:, ::-1]
            flow = flow[:, :, ::-1] * np.array([-1.0, 1.0], dtype=np.float32)[:, None, None]

        return {
            "frame": torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1))),
            "previous": torch.from_numpy(np.ascontiguousarray(previous.transpose(2, 0, 1))),
            "flow": torch.from_numpy(np.ascontiguousarray(flow)),
            "index": index,
        }
