"""One network for every reader: an architecture's encoders, the reader, a decoder, aggregation."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import fields
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from vos.model.aggregation import soft_aggregate
from vos.model.architectures import ARCHITECTURES
from vos.model.decoder import DECODERS
from vos.model.encoders import IMAGENET_MEAN, freeze_batchnorm
from vos.model.flow import OracleFlow, flow_config
from vos.model.memory import MemoryBank
from vos.model.padding import pad_to_stride, unpad, zero_outside
from vos.model.readers.base import FrameFeatures, MemoryReader, ReaderState, Readout

PAD_COLOURS = ("black", "mean")

# the state-dict keys of a flow estimator inside the network (frozen, trained elsewhere)
FLOW_ESTIMATOR_PREFIX = "flow_estimator."


class VOSNetwork(nn.Module):
    """Encoders of one architecture (`vos.model.architectures`), a reader, a decoder."""

    def __init__(
        self,
        reader: MemoryReader,
        arch: str = "stcn",
        key_depth: int = 50,
        key_weights: str | None = None,
        value_depth: int = 18,
        value_weights: str | None = None,
        decoder_channels: int = 256,
        freeze_batchnorm: bool = True,
        flow: nn.Module | OracleFlow | None = None,
        pad_frames_with: str = "black",
    ):
        super().__init__()
        if pad_frames_with not in PAD_COLOURS:
            raise ValueError(
                f"model.arch.pad_frames_with={pad_frames_with!r}: choose one of {PAD_COLOURS}"
            )
        self.pad_frames_with = pad_frames_with
        if arch not in ARCHITECTURES:
            raise ValueError(
                f"model.arch.name={arch!r} is not an architecture; choose one of "
                f"{sorted(ARCHITECTURES)}"
            )
        spec = reader.needs
        self.arch = arch
        self.encoders = ARCHITECTURES[arch](
            spec,
            depth=key_depth,
            weights=key_weights,
            value_depth=value_depth,
            value_weights=value_weights,
        )
        self.reader = reader
        self.decoder = DECODERS[arch](
            spec.readout_channels,
            self.encoders.channels,
            decoder_channels,
            memory_channels=spec.decoder_memory_channels,
        )
        self.freeze_bn = freeze_batchnorm
        # optical flow for readers that need it (RMNet): a separately trained estimator, kept
        # frozen here, or the dataset's own flow (`OracleFlow`), or none
        self.flow_is_oracle = isinstance(flow, OracleFlow)
        self.flow_estimator = flow if isinstance(flow, nn.Module) else None
        if self.flow_estimator is not None:
            self.flow_estimator.requires_grad_(False)
        self.train()

    @property
    def keys_per_object(self) -> bool:
        """Memory keys see the mask (``stm``): one key per object and frame."""
        return self.encoders.keys_per_object

    @property
    def masks_zeroed_outside_frame(self) -> bool:
        """STM's inference crops each prediction to the frame and pads it again with zeros
        before memorising it; STCN's memorises the padded prediction as it is."""
        return self.arch == "stm"

    def pad_frames(self, frames: Tensor) -> Tensor:
        """Frames ``[..., 3, H, W]`` in [0, 1] padded to multiples of 16 (`vos.model.padding`):
        with black (STM, HMMN pad the frame before normalising it) or with the ImageNet mean
        colour, which normalises to zero (STCN, RMNet pad the normalised frame)."""
        if self.pad_frames_with == "black":
            return pad_to_stride(frames)
        mean = frames.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
        return pad_to_stride(frames - mean) + mean

    def train(self, mode: bool = True) -> VOSNetwork:
        super().train(mode)
        if self.freeze_bn:
            freeze_batchnorm(self)
        if self.flow_estimator is not None:
            self.flow_estimator.eval()
        return self

    # -- the steps of docs/architecture.md ------------------------------------------------------
    def encode_frame(
        self,
        frames: Tensor,
        index: int,
        flow: Tensor | None = None,
        frame_size: tuple[int, int] | None = None,
    ) -> FrameFeatures:
        """frames ``[B, 3, H, W]`` in [0, 1], H and W multiples of 16; ``frame_size`` is the
        frame's own size inside that padding (None: no padding)."""
        features, keys, query_value = self.encoders.encode_query(frames)
        return FrameFeatures(
            index=index,
            frames=frames,
            features=features,
            keys=keys,
            query_value=query_value,
            flow=flow,
            frame_size=frame_size,
        )

    def encode_memory(
        self, frame: FrameFeatures, object_probs: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Memory keys and per-object values of a frame from soft masks ``[B, O, H, W]``:
        keys ``[B, Ck, h, w]`` (``stcn``) or ``[B, O, Ck, h, w]`` (``stm``), values
        ``{"res4": [B, O, Cv, h, w], <fine scale>: ...}``."""
        batch, objects = object_probs.shape[:2]
        others = (object_probs.sum(dim=1, keepdim=True) - object_probs).clamp(0, 1)

        def per_object(x: Tensor) -> Tensor:
            return x.unsqueeze(1).expand(-1, objects, *x.shape[1:]).flatten(0, 1)

        keys, values = self.encoders.encode_memory(
            per_object(frame.frames),
            {
                scale: per_object(frame.features[scale])
                for scale in self.encoders.memory_uses_features
            },
            frame.keys,
            object_probs.flatten(0, 1).unsqueeze(1),
            others.flatten(0, 1).unsqueeze(1),
        )
        values = {scale: v.view(batch, objects, *v.shape[1:]) for scale, v in values.items()}
        if self.keys_per_object:
            keys = {name: k.view(batch, objects, *k.shape[1:]) for name, k in keys.items()}
        return keys, values

    def encode_values(self, frame: FrameFeatures, object_probs: Tensor) -> dict[str, Tensor]:
        """The per-object values of `encode_memory`."""
        return self.encode_memory(frame, object_probs)[1]

    def read(self, frame: FrameFeatures, memory: MemoryBank, state: ReaderState) -> Readout:
        """The reader's readout ``{"res4": [B, O, C, h, w], ...}``.

        With keys per object (``stm``) every object is read as its own batch element, as STM's
        code does: the reader sees ``B·O`` queries with one object each, so each reader has
        one interface whichever network it runs on.
        """
        if not self.keys_per_object:
            return self.reader.read(frame, memory, state)
        batch, objects = frame.frames.shape[0], memory.num_objects
        self._fit_state(state, (batch, objects))
        given = state.previous_probs
        if given is not None:
            state.previous_probs = given.flatten(0, 1).unsqueeze(1)
        try:
            readout = self.reader.read(fold_objects(frame, objects), memory.folded(), state)
        finally:
            state.previous_probs = given
        return Readout(
            {name: x.view(batch, objects, *x.shape[2:]) for name, x in readout.features.items()}
        )

    def _fit_state(self, state: ReaderState, layout: tuple[int, int]) -> None:
        """A reader's own state (HMMN's tracks) is per folded batch element: when the number of
        objects changes it starts afresh."""
        if state.folded_layout not in (None, layout):
            fresh = self.reader.new_state()
            for item in fields(fresh):
                if item.name not in ("previous_probs", "folded_layout"):
                    setattr(state, item.name, getattr(fresh, item.name))
        state.folded_layout = layout

    def segment(
        self,
        frame: FrameFeatures,
        memory: MemoryBank,
        state: ReaderState,
        present: Tensor | None = None,
        read_timer: AbstractContextManager | None = None,
    ) -> Tensor:
        """Label logits ``[B, O+1, H, W]`` (background first) after soft aggregation."""
        with read_timer or nullcontext():
            readout = self.read(frame, memory, state)
        fine = {k: v for k, v in readout.features.items() if k != "res4"}
        object_logits = self.decoder(
            readout.features["res4"], frame.features, frame.frames.shape[-2:], fine
        )
        return soft_aggregate(torch.sigmoid(object_logits), present)

    def memorize(
        self,
        memory: MemoryBank,
        frame: FrameFeatures,
        object_probs: Tensor,
        object_valid: Tensor | None = None,
        *,
        permanent: bool = False,
        temporary: bool = False,
    ) -> None:
        keys, values = self.encode_memory(frame, object_probs)
        extras = self.reader.memorize(frame, values, memory, object_probs=object_probs)
        if temporary:
            memory.set_temporary(frame.index, keys, values, object_valid, extras)
        else:
            memory.add(frame.index, keys, values, object_valid, permanent=permanent, extras=extras)

    # -- a training clip -----------------------------------------------------------------
    def segment_clip(
        self, frames: Tensor, labels: Tensor, present: Tensor, flow: Tensor | None = None
    ) -> list[Tensor]:
        """Label logits for frames 1..T-1 of a clip; frame 0's mask is given.

        Each predicted frame's soft mask goes into memory before the next frame is read, as
        at inference. frames ``[B, T, 3, H, W]``, labels ``[B, T, H, W]``, present ``[B, O]``;
        ``flow`` ``[B, T, 2, H, W]`` (backward) for readers that need it, estimated by the flow
        network when not given.
        """
        batch, num_frames = frames.shape[:2]
        objects = present.shape[1]
        height, width = frames.shape[-2:]
        padded = self.pad_frames(frames.flatten(0, 1))
        features = self.encode_frame(padded, index=0)
        if flow is None and self.reader.needs.needs_flow:
            flow = self.estimate_clip_flow(frames)

        def frame_at(t: int) -> FrameFeatures:
            def pick(x: Tensor) -> Tensor:
                return x.view(batch, num_frames, *x.shape[1:])[:, t]

            return FrameFeatures(
                index=t,
                frames=pick(features.frames),
                features={k: pick(v) for k, v in features.features.items()},
                keys={k: pick(v) for k, v in features.keys.items()},
                query_value=pick(features.query_value),
                flow=None if flow is None else pad_to_stride(flow[:, t]),
            )

        first = labels[:, 0]
        given = torch.stack([(first == i + 1) for i in range(objects)], dim=1).float()
        given = pad_to_stride(given)
        memory = MemoryBank()
        state = self.reader.new_state()
        state.previous_probs = given
        self.memorize(memory, frame_at(0), given, permanent=True)
        outputs = []
        for t in range(1, num_frames):
            frame = frame_at(t)
            logits = self.segment(frame, memory, state, present)
            outputs.append(unpad(logits, height, width))
            object_probs = F.softmax(logits, dim=1)[:, 1:]
            if self.masks_zeroed_outside_frame:
                object_probs = zero_outside(object_probs, height, width)
            state.previous_probs = object_probs
            if t < num_frames - 1:
                self.memorize(memory, frame, object_probs)
        return outputs

    @torch.no_grad()
    def estimate_clip_flow(self, frames: Tensor) -> Tensor:
        """Backward flow ``[B, T, 2, H, W]`` between consecutive clip frames from the frozen
        flow network, for data without flow (DAVIS, YouTube-VOS)."""
        if self.flow_estimator is None:
            raise ValueError(
                "the reader needs optical flow and the training data has none: choose a flow "
                "network, model/flow=tinyflownet or model/flow=raft"
            )
        flow = frames.new_zeros(frames.shape[0], frames.shape[1], 2, *frames.shape[-2:])
        for t in range(1, frames.shape[1]):  # the estimators pad and crop on their own
            flow[:, t] = self.flow_estimator(frames[:, t], frames[:, t - 1])
        return flow


def build_network(model_cfg: Mapping[str, Any] | DictConfig) -> VOSNetwork:
    """The network a `model=` config describes (also used to rebuild it from a checkpoint)."""
    cfg = model_cfg if isinstance(model_cfg, DictConfig) else OmegaConf.create(dict(model_cfg))
    reader = hydra.utils.instantiate(cfg.reader)
    flow_cfg = cfg.get("flow")
    flow = hydra.utils.instantiate(flow_config(flow_cfg)) if flow_cfg is not None else None
    # a reader config without `arch` in its defaults gets STM's network, the baseline's
    arch = cfg.get("arch") or {"name": "stm"}
    return VOSNetwork(
        reader,
        arch=arch["name"],
        key_depth=cfg.backbone.depth,
        key_weights=cfg.backbone.weights,
        value_depth=cfg.value_backbone.depth,
        value_weights=cfg.value_backbone.weights,
        decoder_channels=cfg.decoder_channels,
        freeze_batchnorm=cfg.freeze_batchnorm,
        flow=flow,
        pad_frames_with=arch.get("pad_frames_with", "black"),
    )


def fold_objects(frame: FrameFeatures, objects: int) -> FrameFeatures:
    """A query frame repeated for each object: batch ``B`` becomes ``B·O`` (object-minor)."""

    def repeat(x: Tensor) -> Tensor:
        return x.repeat_interleave(objects, dim=0)

    return FrameFeatures(
        index=frame.index,
        frames=repeat(frame.frames),
        features={scale: repeat(x) for scale, x in frame.features.items()},
        keys={name: repeat(x) for name, x in frame.keys.items()},
        query_value=repeat(frame.query_value),
        flow=None if frame.flow is None else repeat(frame.flow),
        frame_size=frame.frame_size,
    )
