"""The two network families the papers build on: where keys and values come from.

``stm`` (STM, RMNet, HMMN, LCM): a *memory encoder* sees the frame with the object's mask and
the other objects' mask and has its own key and value heads, so memory keys depend on the
object; a separate *query encoder* has its own key and value heads. One memory encoding per
object and frame (STM §3.1; RMNet §3.4; HMMN §3.1; LCM §3).

``stcn`` (STCN, LMRC): one *key encoder* serves memory and query, so keys do not depend on the
mask and one affinity serves every object; a light *value encoder* (ResNet-18 on frame + masks)
fuses the key encoder's res4 features (STCN §3; LMRC §III-A).

Both compute, for a query frame, the keys named in the reader's `FeatureSpec.key_scales` and
the query's own value at res4; for a memory frame, the keys (per object for ``stm``) and the
per-object values at res4 and at the reader's fine scales. Readers see the same interface on
both; `vos.model.network.VOSNetwork` folds objects into the batch when keys are per object.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vos.model.blocks import FeatureFusion
from vos.model.encoders import ResNetTrunk
from vos.model.readers.base import FeatureSpec, scale_of

MASK_INPUTS = ("mask", "others")


def _heads(channels: dict[str, int], widths: dict[str, int]) -> nn.ModuleDict:
    """A 3×3 conv per name, from the features at that name's scale."""
    return nn.ModuleDict(
        {
            name: nn.Conv2d(channels[scale_of(name)], width, 3, padding=1)
            for name, width in widths.items()
        }
    )


class STMEncoders(nn.Module):
    """Query encoder + heads, memory encoder (frame, mask, others) + heads (STM, HMMN, RMNet)."""

    keys_per_object = True
    memory_uses_features: tuple[str, ...] = ()  # the memory encoder sees the frame itself

    def __init__(self, spec: FeatureSpec, depth: int = 50, weights: str | None = None, **_):
        super().__init__()
        self.query_encoder = ResNetTrunk(depth, weights)
        self.memory_encoder = ResNetTrunk(depth, weights, extra_inputs=MASK_INPUTS)
        channels = self.query_encoder.channels
        self.channels = channels
        self.query_key = _heads(channels, spec.key_scales)
        self.query_value = nn.Conv2d(channels["res4"], spec.value_channels, 3, padding=1)
        self.memory_key = _heads(channels, spec.key_scales)
        self.memory_value = _heads(
            channels, {"res4": spec.value_channels, **spec.fine_value_channels}
        )

    def encode_query(self, frames: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
        features = self.query_encoder(frames)
        keys = {name: head(features[scale_of(name)]) for name, head in self.query_key.items()}
        return features, keys, self.query_value(features["res4"])

    def encode_memory(
        self,
        frames: Tensor,
        frame_features: dict[str, Tensor],
        frame_keys: dict[str, Tensor],
        masks: Tensor,
        others: Tensor,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Per-object inputs ``[B·O, ·, H, W]`` -> keys and values ``[B·O, C, ·, ·]``."""
        features = self.memory_encoder(frames, {"mask": masks, "others": others})
        keys = {name: head(features[scale_of(name)]) for name, head in self.memory_key.items()}
        values = {scale: head(features[scale]) for scale, head in self.memory_value.items()}
        return keys, values


class STCNEncoders(nn.Module):
    """Key encoder + key projections shared by memory and query; value encoder (STCN, LMRC)."""

    keys_per_object = False

    def __init__(
        self,
        spec: FeatureSpec,
        depth: int = 50,
        weights: str | None = None,
        value_depth: int = 18,
        value_weights: str | None = None,
    ):
        super().__init__()
        self.key_encoder = ResNetTrunk(depth, weights)
        channels = self.key_encoder.channels
        self.channels = channels
        self.key_projection = _heads(channels, spec.key_scales)
        for conv in self.key_projection.values():
            nn.init.orthogonal_(conv.weight)  # STCN: keeps key norms even across channels
            nn.init.zeros_(conv.bias)
        self.query_value = nn.Conv2d(channels["res4"], spec.value_channels, 3, padding=1)
        # STCN's value ResNet has a bias on every conv (its modified ResNet)
        self.value_encoder = ResNetTrunk(
            value_depth, value_weights, extra_inputs=MASK_INPUTS, conv_bias=True
        )
        value_trunk = self.value_encoder.channels
        self.fuser = FeatureFusion(value_trunk["res4"] + channels["res4"], spec.value_channels)
        # fine values (HMMN, LMRC): a 3×3 conv on the value trunk's features at that scale, with
        # the key encoder's features beside them when the reader asks (LMRC §III-A-2)
        see_frame = spec.fine_values_see_frame_features
        self.fine_value = nn.ModuleDict(
            {
                scale: nn.Conv2d(
                    value_trunk[scale] + (channels[scale] if see_frame else 0), width, 3, padding=1
                )
                for scale, width in spec.fine_value_channels.items()
            }
        )
        self.fine_values_see_frame = see_frame

    def encode_query(self, frames: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
        features = self.key_encoder(frames)
        keys = {name: proj(features[scale_of(name)]) for name, proj in self.key_projection.items()}
        return features, keys, self.query_value(features["res4"])

    def encode_memory(
        self,
        frames: Tensor,
        frame_features: dict[str, Tensor],
        frame_keys: dict[str, Tensor],
        masks: Tensor,
        others: Tensor,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Per-object inputs ``[B·O, ·, H, W]`` (the frame's key-encoder features per object)
        -> the frame's own keys ``[B, Ck, ·, ·]`` and values ``[B·O, C, ·, ·]``."""
        trunk = self.value_encoder(frames, {"mask": masks, "others": others})
        values = {"res4": self.fuser(trunk["res4"], frame_features["res4"])}
        for scale, conv in self.fine_value.items():
            inputs = trunk[scale]
            if self.fine_values_see_frame:
                inputs = torch.cat([inputs, frame_features[scale]], dim=1)
            values[scale] = conv(inputs)
        return dict(frame_keys), values

    @property
    def memory_uses_features(self) -> tuple[str, ...]:
        """The query-path (key encoder) features of the frame the memory encoding reads."""
        return ("res4", *(self.fine_value if self.fine_values_see_frame else ()))


ARCHITECTURES: dict[str, type[nn.Module]] = {"stm": STMEncoders, "stcn": STCNEncoders}
