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
from vos.model.memory import MemoryBank
from vos.model.readers.base import FrameFeatures, MemoryReader, ReaderState, scale_of


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
        flow_name: str = "none",
        flow_estimator: nn.Module | None = None,
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
        # frozen here, or "oracle" (the dataset's flow) / "none"
        self.flow_name = flow_name
        self.flow_estimator = flow_estimator
        if flow_estimator is not None:
            flow_estimator.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> VOSNetwork:
        super().train(mode)
        if self.freeze_bn:
            freeze_batchnorm(self)
        if self.flow_estimator is not None:
            self.flow_estimator.eval()
        return self

    # -- the four steps of DESIGN.md ------------------------------------------------------
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


def build_network(model_cfg: Mapping[str, Any] | DictConfig) -> VOSNetwork:
    """The network a `model=` config describes (also used to rebuild it from a checkpoint)."""
    cfg = model_cfg if isinstance(model_cfg, DictConfig) else OmegaConf.create(dict(model_cfg))
    reader = hydra.utils.instantiate(cfg.reader)
    flow_cfg = cfg.get("flow") or {"name": "none", "weights": None}
    flow_name = str(flow_cfg["name"])
    flow_estimator = None
    if flow_name not in ("none", "oracle"):
        from vos.model.flow import build_flow_estimator

        flow_estimator = build_flow_estimator(flow_name, flow_cfg.get("weights"))
    return VOSNetwork(
        reader,
        key_depth=cfg.backbone.depth,
        key_weights=cfg.backbone.weights,
        value_depth=cfg.value_backbone.depth,
        value_weights=cfg.value_backbone.weights,
        decoder_channels=cfg.decoder_channels,
        freeze_batchnorm=cfg.freeze_batchnorm,
        flow_name=flow_name,
        flow_estimator=flow_estimator,
    )


def label_probabilities(logits: Tensor) -> Tensor:
    """Label probabilities ``[B, O+1, H, W]`` from aggregated logits."""
    return F.softmax(logits, dim=1)
