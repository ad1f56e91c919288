"""The frame-by-frame inference engine shared by validation, `vos.eval` and `vos.bench`.

Protocol (semi-supervised): each object's mask is given at the first frame where it appears
(frame 0 for DAVIS; later frames for YouTube-VOS-style late objects); every other frame is
predicted from memory. Memory = every frame where objects are given (permanent) + every
``mem_every``-th frame, capped at ``max_memory_frames`` (oldest non-permanent dropped), + the
previous frame as temporary memory when ``include_previous``. Frames are processed with their
short side resized to ``size`` (None keeps them) and padded to a multiple of 16; masks come
back at the original size with the dataset's object ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vos.data.source import VideoSource
from vos.model.aggregation import soft_aggregate
from vos.model.memory import MemoryBank
from vos.model.network import VOSNetwork
from vos.model.readers.base import ReaderState

STRIDE = 16


class Stopwatch:
    """Accumulates wall time of the blocks it wraps (synchronising CUDA around them)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self):
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds += time.perf_counter() - start


@dataclass
class VideoResult:
    labels: np.ndarray  # uint8 [T, H, W] with the dataset's object ids
    frame_seconds: list[float] = field(default_factory=list)
    read_seconds: list[float] = field(default_factory=list)
    memory_frames: list[int] = field(default_factory=list)  # frames read, per frame


def processing_size(height: int, width: int, size: int | None) -> tuple[int, int]:
    """(h, w) after resizing the short side to ``size`` (unchanged when None)."""
    if size is None:
        return height, width
    scale = size / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def pad_to_stride(x: Tensor, stride: int = STRIDE) -> Tensor:
    height, width = x.shape[-2:]
    return F.pad(x, (0, (-width) % stride, 0, (-height) % stride))


class InferenceEngine:
    def __init__(
        self,
        network: VOSNetwork,
        *,
        mem_every: int = 5,
        include_previous: bool = True,
        max_memory_frames: int | None = 10,
        size: int | None = None,
    ):
        if mem_every < 1:
            raise ValueError(f"inference.mem_every must be >= 1, got {mem_every}")
        self.network = network
        self.mem_every = mem_every
        self.include_previous = include_previous
        self.max_memory_frames = max_memory_frames
        self.size = size

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def _prepare(self, image: np.ndarray, hw: tuple[int, int]) -> Tensor:
        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1).float().div_(255).unsqueeze(0)
        if x.shape[-2:] != hw:
            x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False)
        return pad_to_stride(x)

    @torch.inference_mode()
    def run_video(
        self,
        source: VideoSource,
        video: str,
        *,
        max_frames: int | None = None,
        on_frame: Callable[[int, np.ndarray], None] | None = None,
    ) -> VideoResult:
        was_training = self.network.training
        self.network.eval()
        try:
            return self._run(source, video, max_frames, on_frame)
        finally:
            self.network.train(was_training)

    def _run(self, source, video, max_frames, on_frame) -> VideoResult:
        info = source.info(video)
        num_frames = info.num_frames if max_frames is None else min(max_frames, info.num_frames)
        height, width = info.height, info.width
        hw = processing_size(height, width, self.size)
        joins: dict[int, list[int]] = {}
        for obj_id, first in sorted(info.first_frames.items()):
            joins.setdefault(first, []).append(obj_id)

        memory = MemoryBank(self.max_memory_frames)
        state = ReaderState()
        active: list[int] = []  # object ids in channel order
        result = VideoResult(labels=np.zeros((num_frames, height, width), dtype=np.uint8))
        stopwatch = Stopwatch(self.device)
        lut = np.zeros(1, dtype=np.uint8)
        previous_image: Tensor | None = None
        for t in range(num_frames):
            start = time.perf_counter()
            read_before = stopwatch.seconds
            new_ids = joins.get(t, [])
            if not active and not new_ids:
                result.frame_seconds.append(time.perf_counter() - start)
                result.read_seconds.append(0.0)
                result.memory_frames.append(0)
                continue
            image = self._prepare(source.read_frame(video, t), hw)
            flow = None
            if self.network.reader.needs.needs_flow and previous_image is not None:
                flow = self._flow(source, video, t, image, previous_image, hw)
            previous_image = image
            frame = self.network.encode_frame(image, t, flow=flow)
            padded_hw = frame.frames.shape[-2:]
            result.memory_frames.append(len(memory))
            if active:
                logits = self.network.segment(frame, memory, state, read_timer=stopwatch())
                label_probs = F.softmax(logits, dim=1)
            if new_ids:
                given = self._given_masks(source.read_mask(video, t), new_ids, hw, padded_hw)
                object_probs = (
                    label_probs[:, 1:] * (1 - given.amax(dim=1, keepdim=True)) if active else None
                )
                object_probs = (
                    given if object_probs is None else torch.cat([object_probs, given], dim=1)
                )
                if active:
                    memory.add_objects(len(new_ids))
                active.extend(new_ids)
                lut = np.array([0, *active], dtype=np.uint8)
                label_probs = F.softmax(soft_aggregate(object_probs), dim=1)
            object_probs = label_probs[:, 1:]
            state.previous_probs = object_probs

            if new_ids:
                self.network.memorize(memory, frame, object_probs, permanent=True)
            elif t % self.mem_every == 0:
                self.network.memorize(memory, frame, object_probs)
            elif self.include_previous:
                self.network.memorize(memory, frame, object_probs, temporary=True)

            probs = label_probs[..., : hw[0], : hw[1]]
            if probs.shape[-2:] != (height, width):
                probs = F.interpolate(
                    probs, size=(height, width), mode="bilinear", align_corners=False
                )
            labels = lut[probs[0].argmax(dim=0).cpu().numpy()]
            result.labels[t] = labels
            result.frame_seconds.append(time.perf_counter() - start)
            result.read_seconds.append(stopwatch.seconds - read_before)
            if on_frame is not None:
                on_frame(t, labels)
        return result

    def _flow(self, source, video: str, t: int, image: Tensor, previous: Tensor, hw) -> Tensor:
        """Backward flow t -> t-1 ``[1, 2, H, W]`` at the processing size (padded), from the
        network's flow estimator (TinyFlowNet, RAFT) or, with ``model.flow.name=oracle``, the
        dataset's ground-truth flow."""
        if self.network.flow_name == "oracle":
            flow = source.read_flow(video, t)
            if flow is None:
                raise ValueError(
                    f"inference.flow=oracle, but the dataset has no optical flow for {video!r}"
                )
            flow = torch.from_numpy(flow).to(self.device).float().unsqueeze(0)
            height, width = flow.shape[-2:]
            if (height, width) != hw:
                # resample the field and rescale its (u, v) to the new pixel units
                flow = F.interpolate(flow, size=hw, mode="bilinear", align_corners=False)
                flow[:, 0] *= hw[1] / width
                flow[:, 1] *= hw[0] / height
            return pad_to_stride(flow)
        if self.network.flow_estimator is None:
            raise ValueError(
                "the reader needs optical flow but model.flow.name is "
                f"{self.network.flow_name!r}: choose tinyflownet, raft or oracle"
            )
        return self.network.flow_estimator(image, previous)

    def _given_masks(self, mask: np.ndarray, ids: list[int], hw, padded_hw) -> Tensor:
        m = (
            torch.from_numpy(np.stack([mask == i for i in ids]))
            .to(self.device)
            .float()
            .unsqueeze(0)
        )
        if m.shape[-2:] != hw:
            m = F.interpolate(m, size=hw, mode="nearest")
        return pad_to_stride(m) if m.shape[-2:] != padded_hw else m
