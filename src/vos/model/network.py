"""One network for every reader: key encoder, value encoder, reader, decoder, aggregation."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from vos.model.aggregation import soft_aggregate
from vos.model.decoder import Decoder
from vos.model.encoders import KeyEncoder, ValueEncoder, freeze_batchnorm
from vos.model.flow import OracleFlow, flow_config
from vos.model.memory import MemoryBank
from vos.model.padding import pad_to_stride
from vos.model.readers.base import FrameFeatures, MemoryReader, ReaderState, scale_of

# the state-dict keys of a flow estimator inside the network (frozen, trained elsewhere)
FLOW_ESTIMATOR_PREFIX = "flow_estimator."


class VOSNetwork(nn.Module):
    def __init__(
        self,
        reader: MemoryReader,
        key_depth: int = 50,
        key_weights: str | None = None,
        value_depth: int = 18,
        value_weights: str | None = None,
        decoder_channels: int = 256,
        freeze_batchnorm: bool = True,
        flow: nn.Module | OracleFlow | None = None,
    ):
        super().__init__()
        spec = reader.needs
        self.key_encoder = KeyEncoder(key_depth, key_weights)
        channels = self.key_encoder.channels
        self.key_projection = nn.ModuleDict(
            {
                name: nn.Conv2d(channels[scale_of(name)], ck, 3, padding=1)
                for name, ck in spec.key_scales.items()
            }
        )
        for conv in self.key_projection.values():
            nn.init.orthogonal_(conv.weight)  # STCN: keeps key norms even across channels
            nn.init.zeros_(conv.bias)
        self.query_value = nn.Conv2d(channels["res4"], spec.value_channels, 3, padding=1)
        self.value_encoder = ValueEncoder(
            spec.value_channels,
            channels["res4"],
            value_depth,
            value_weights,
            fine_value_channels=spec.fine_value_channels,
            fine_frame_feature_channels=(
                {scale: channels[scale] for scale in spec.fine_value_channels}
                if spec.fine_values_see_frame_features
                else None
            ),
        )
        self.reader = reader
        self.decoder = Decoder(
            spec.readout_channels,
            channels,
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

    def train(self, mode: bool = True) -> VOSNetwork:
        super().train(mode)
        if self.freeze_bn:
            freeze_batchnorm(self)
        if self.flow_estimator is not None:
            self.flow_estimator.eval()
        return self

    # -- the steps of docs/architecture.md ------------------------------------------------------
    def encode_frame(self, frames: Tensor, index: int, flow: Tensor | None = None) -> FrameFeatures:
        """frames ``[B, 3, H, W]`` in [0, 1], H and W multiples of 16."""
        features = self.key_encoder(frames)
        keys = {name: proj(features[scale_of(name)]) for name, proj in self.key_projection.items()}
        return FrameFeatures(
            index=index,
            frames=frames,
            features=features,
            keys=keys,
            query_value=self.query_value(features["res4"]),
            flow=flow,
        )

    def encode_values(self, frame: FrameFeatures, object_probs: Tensor) -> dict[str, Tensor]:
        """Per-object values ``{"res4": [B, O, Cv, h, w], ...}`` from soft masks
        ``[B, O, H, W]`` (finer scales for readers that declare them)."""
        batch, objects = object_probs.shape[:2]
        others = (object_probs.sum(dim=1, keepdim=True) - object_probs).clamp(0, 1)

        def per_object(x: Tensor) -> Tensor:
            return x.unsqueeze(1).expand(-1, objects, *x.shape[1:]).flatten(0, 1)

        frame_features = {
            scale: per_object(frame.features[scale]) for scale in self.value_encoder.uses_features
        }
        values = self.value_encoder(
            per_object(frame.frames),
            frame_features,
            object_probs.flatten(0, 1).unsqueeze(1),
            others.flatten(0, 1).unsqueeze(1),
        )
        return {scale: v.view(batch, objects, *v.shape[1:]) for scale, v in values.items()}

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
            readout = self.reader.read(frame, memory, state)
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
        values = self.encode_values(frame, object_probs)
        extras = self.reader.memorize(frame, values, memory, object_probs=object_probs)
        if temporary:
            memory.set_temporary(frame.index, frame.keys, values, object_valid, extras)
        else:
            memory.add(
                frame.index, frame.keys, values, object_valid, permanent=permanent, extras=extras
            )

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
        padded = pad_to_stride(frames.flatten(0, 1))
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
            outputs.append(logits[..., :height, :width])
            object_probs = F.softmax(logits, dim=1)[:, 1:]
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
    return VOSNetwork(
        reader,
        key_depth=cfg.backbone.depth,
        key_weights=cfg.backbone.weights,
        value_depth=cfg.value_backbone.depth,
        value_weights=cfg.value_backbone.weights,
        decoder_channels=cfg.decoder_channels,
        freeze_batchnorm=cfg.freeze_batchnorm,
        flow=flow,
    )
