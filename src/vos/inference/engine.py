"""The frame-by-frame inference engine shared by validation, `vos.eval` and `vos.bench`.

Each object's mask is given at the first frame where it appears (`vos.inference.objects`);
every other frame is predicted from memory, and what goes into memory follows
`vos.inference.memory_policy`. Frames are processed with their short side resized to
``size`` (None keeps them) and padded to a multiple of 16; masks come back at the original
size with the dataset's object ids. ``precision`` (`vos.inference.precision`) runs the network
under autocast for ``16-mixed`` / ``bf16-mixed``; the label probabilities stay fp32.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vos.data.source import VideoSource
from vos.inference.memory_policy import Memorise, MemoryPolicy
from vos.inference.objects import ObjectTable
from vos.inference.precision import check_autocast_supported, network_autocast, parse_precision
from vos.model.aggregation import soft_aggregate
from vos.model.memory import MemoryBank
from vos.model.network import VOSNetwork
from vos.model.padding import pad_to_stride, unpad, zero_outside
from vos.profiling import Stopwatch


def label_argmax(probs: Tensor) -> Tensor:
    """``probs.argmax(dim=0)`` for ``[K, H, W]`` label probabilities: a running maximum over
    the few label channels, which keeps the first of equal maxima as argmax does. On the CPU
    torch's reduction over the leading dimension takes about 90 ms at 480×864, this 5 ms."""
    best = probs[0]
    labels = torch.zeros(probs.shape[1:], dtype=torch.long, device=probs.device)
    for label in range(1, probs.shape[0]):
        better = probs[label] > best
        labels.masked_fill_(better, label)
        best = torch.where(better, probs[label], best)
    return labels


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


class InferenceEngine:
    def __init__(
        self,
        network: VOSNetwork,
        *,
        mem_every: int = 5,
        include_previous: bool = True,
        max_memory_frames: int | None = 10,
        size: int | None = None,
        precision: str | int = "32",
    ):
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 16):
            raise ValueError(
                f"inference.size={size!r}: expected the short side in pixels (an integer of at "
                "least 16) or null to keep the frames' size"
            )
        self.network = network
        self.policy = MemoryPolicy(mem_every, include_previous, max_memory_frames)
        self.size = size
        self.precision = parse_precision(precision)
        check_autocast_supported(self.precision, self.device)

    def with_policy(self, **changes) -> InferenceEngine:
        """The same network with some memory settings changed (``mem_every=...``)."""
        engine = InferenceEngine(self.network, size=self.size, precision=self.precision)
        engine.policy = replace(self.policy, **changes)
        return engine

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @torch.inference_mode()
    def run_video(
        self,
        source: VideoSource,
        video: str,
        *,
        max_frames: int | None = None,
        on_frame: Callable[[int, np.ndarray], None] | None = None,
        on_probs: Callable[[int, Tensor], None] | None = None,
    ) -> VideoResult:
        """Segment ``video``; ``on_frame(t, labels)`` is called for every frame from the first
        object's frame on (earlier frames are left empty), ``on_probs(t, probs)`` with the
        label probabilities ``[O+1, h, w]`` at the processing size (background first, objects
        in the order they joined), e.g. to compare with another implementation."""
        was_training = self.network.training
        self.network.eval()
        try:
            with network_autocast(self.precision, self.device):
                return self._run(source, video, max_frames, on_frame, on_probs)
        finally:
            self.network.train(was_training)

    def _run(self, source, video, max_frames, on_frame, on_probs=None) -> VideoResult:
        info = source.info(video)
        num_frames = info.num_frames if max_frames is None else min(max_frames, info.num_frames)
        hw = processing_size(info.height, info.width, self.size)
        objects = ObjectTable(info)
        memory = MemoryBank(self.policy.max_memory_frames)
        state = self.network.reader.new_state()
        result = VideoResult(labels=np.zeros((num_frames, info.height, info.width), np.uint8))
        read_time = Stopwatch(self.device)
        previous_image: Tensor | None = None
        for t in range(num_frames):
            start = time.perf_counter()
            read_before = read_time.seconds
            new_ids = objects.joining(t)
            frames_read = len(memory)
            if objects.active or new_ids:
                image = self._prepare(source.read_frame(video, t), hw)
                flow = None
                if self.network.reader.needs.needs_flow and previous_image is not None:
                    flow = self._flow(source, video, t, image, previous_image, hw)
                previous_image = image
                frame = self.network.encode_frame(image, t, flow=flow, frame_size=hw)
                label_probs = None
                if objects.active:
                    logits = self.network.segment(frame, memory, state, read_timer=read_time())
                    # fp32 probabilities under autocast too: they are memorised, carried to
                    # the next frame and compared by argmax, where half precision makes ties
                    label_probs = F.softmax(logits.float(), dim=1)
                if new_ids:
                    given = self._given_masks(source.read_mask(video, t), new_ids, hw)
                    label_probs = self._add_objects(label_probs, given, memory, objects, new_ids)
                object_probs = label_probs[:, 1:]
                if self.network.masks_zeroed_outside_frame:
                    object_probs = zero_outside(object_probs, *hw)
                state.previous_probs = object_probs
                self._memorise(memory, frame, object_probs, self.policy.decide(t, bool(new_ids)))
                labels = self._labels(label_probs, hw, (info.height, info.width), objects)
                if on_probs is not None:
                    on_probs(t, unpad(label_probs, *hw)[0])
                result.labels[t] = labels
            result.frame_seconds.append(time.perf_counter() - start)
            result.read_seconds.append(read_time.seconds - read_before)
            result.memory_frames.append(frames_read if objects.active else 0)
            if objects.active and on_frame is not None:
                on_frame(t, result.labels[t])
        return result

    def _prepare(self, image: np.ndarray, hw: tuple[int, int]) -> Tensor:
        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1).float().div_(255).unsqueeze(0)
        if x.shape[-2:] != hw:
            x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False)
        return self.network.pad_frames(x)

    @staticmethod
    def _add_objects(
        label_probs: Tensor | None,
        given: Tensor,
        memory: MemoryBank,
        objects: ObjectTable,
        new_ids: list[int],
    ) -> Tensor:
        """Label probabilities once the objects given at this frame have joined: their masks
        win over the predicted ones, whose probabilities keep the rest of each pixel."""
        if label_probs is None:
            object_probs = given
        else:
            kept = label_probs[:, 1:] * (1 - given.amax(dim=1, keepdim=True))
            object_probs = torch.cat([kept, given], dim=1)
            memory.add_objects(len(new_ids))
        objects.join(new_ids)
        return F.softmax(soft_aggregate(object_probs), dim=1)

    def _memorise(self, memory: MemoryBank, frame, object_probs: Tensor, what: Memorise) -> None:
        if what is Memorise.NOTHING:
            return
        self.network.memorize(
            memory,
            frame,
            object_probs,
            permanent=what is Memorise.PERMANENT,
            temporary=what is Memorise.TEMPORARY,
        )

    @staticmethod
    def _labels(label_probs: Tensor, hw, size, objects: ObjectTable) -> np.ndarray:
        """Dataset ids ``uint8 [H, W]`` at the original size from padded probabilities."""
        probs = unpad(label_probs, *hw)
        if probs.shape[-2:] != size:
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
        return objects.to_ids(label_argmax(probs[0]).cpu().numpy())

    def _flow(self, source, video: str, t: int, image: Tensor, previous: Tensor, hw) -> Tensor:
        """Backward flow t -> t-1 ``[1, 2, H, W]`` at the processing size (padded), from the
        network's flow estimator (TinyFlowNet, RAFT) or, with ``model/flow=oracle``, the
        dataset's ground-truth flow."""
        if self.network.flow_is_oracle:
            flow = source.read_flow(video, t)
            if flow is None:
                raise ValueError(
                    f"model/flow=oracle, but the dataset has no optical flow for {video!r}"
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
                "the reader needs optical flow but model/flow is none: choose tinyflownet, "
                "raft or oracle"
            )
        return self.network.flow_estimator(image, previous)

    def _given_masks(self, mask: np.ndarray, ids: list[int], hw) -> Tensor:
        m = torch.from_numpy(np.stack([mask == i for i in ids])).to(self.device)
        m = m.float().unsqueeze(0)
        if m.shape[-2:] != hw:
            m = F.interpolate(m, size=hw, mode="nearest")
        return pad_to_stride(m)
