"""The two decoders: STM's (STM, RMNet, HMMN, LCM) and STCN's (STCN, LMRC).

Both take the res4 readout of each object and the query frame's res3/res2 features, and give
one logit per object and pixel at the input resolution. Fine memory readouts (HMMN's res3/res2
reads, LMRC's local reads) enter beside the skip features at their scale.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vos.model.blocks import Refine, ResBlock, UpsampleBlock, per_object


def _check_fine_scales(memory_channels: dict[str, int]) -> None:
    unknown = set(memory_channels) - {"res3", "res2"}
    if unknown:
        raise ValueError(f"fine memory readouts go to res3/res2 only, got {sorted(unknown)}")


class _Decoder(nn.Module):
    def forward(
        self,
        readout: Tensor,
        skips: dict[str, Tensor],
        output_size: tuple[int, int],
        memory_readouts: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """readout ``[B, O, C, h, w]``; skips shared by the objects, ``[B, C, ·, ·]``;
        ``memory_readouts`` per-object readouts at res3/res2 ``[B, O, C, ·, ·]``
        -> per-object logits ``[B, O, H, W]``."""
        batch, objects = readout.shape[:2]
        memory_readouts = memory_readouts or {}

        def fine(scale: str) -> Tensor | None:
            value = memory_readouts.get(scale)
            return None if value is None else value.flatten(0, 1)

        x = self.res4(readout.flatten(0, 1))
        x = self.to_res3(skips["res3"], x, fine("res3"))
        x = self.to_res2(skips["res2"], x, fine("res2"))
        logits = self.head(F.relu(x))
        logits = F.interpolate(logits, size=output_size, mode="bilinear", align_corners=False)
        return self.object_logit(logits).view(batch, objects, *output_size)

    def object_logit(self, head: Tensor) -> Tensor:
        return head[:, 0]


class STMDecoder(_Decoder):
    """STM's: convFM → ResMM at res4, Refine(res3), Refine(res2), a 3×3 conv to two channels,
    bilinear ×4. STM takes softmax(·)[:, 1]; the returned logit is l1 − l0, whose sigmoid is
    that same probability. With HMMN's memory readouts, each Refine adds its scale's readout
    through a bias-free conv (HMMN's ``convMemory``)."""

    def __init__(
        self,
        readout_channels: int,
        skip_channels: dict[str, int],
        channels: int = 256,
        memory_channels: dict[str, int] | None = None,
    ):
        super().__init__()
        memory_channels = dict(memory_channels or {})
        _check_fine_scales(memory_channels)
        self.convFM = nn.Conv2d(readout_channels, channels, 3, padding=1)
        self.ResMM = ResBlock(channels)
        self.RF3 = Refine(skip_channels["res3"], channels, memory_channels.get("res3"))
        self.RF2 = Refine(skip_channels["res2"], channels, memory_channels.get("res2"))
        self.pred = nn.Conv2d(channels, 2, 3, padding=1)

    def res4(self, readout: Tensor) -> Tensor:
        return self.ResMM(self.convFM(readout))

    # Refine's first conv is per object in STM's code (the skip is expanded to the objects
    # first) and HMMN adds its memory readout before the residual block there
    def to_res3(self, skip: Tensor, coarse: Tensor, memory: Tensor | None) -> Tensor:
        return self.RF3(per_object(skip, coarse), coarse, memory)

    def to_res2(self, skip: Tensor, coarse: Tensor, memory: Tensor | None) -> Tensor:
        return self.RF2(per_object(skip, coarse), coarse, memory)

    def head(self, x: Tensor) -> Tensor:
        return self.pred(x)

    def object_logit(self, head: Tensor) -> Tensor:
        return head[:, 1] - head[:, 0]


class STCNDecoder(_Decoder):
    """STCN's: compress = ResBlock(readout → 2·C) at res4, UpsampleBlock(res3 → C),
    UpsampleBlock(res2 → C), a 3×3 conv to one logit, bilinear ×4 (C = 256 in STCN)."""

    def __init__(
        self,
        readout_channels: int,
        skip_channels: dict[str, int],
        channels: int = 256,
        memory_channels: dict[str, int] | None = None,
    ):
        super().__init__()
        memory_channels = dict(memory_channels or {})
        _check_fine_scales(memory_channels)
        self.compress = ResBlock(readout_channels, 2 * channels)
        self.up_16_8 = UpsampleBlock(
            skip_channels["res3"], 2 * channels, channels, memory_channels.get("res3")
        )
        self.up_8_4 = UpsampleBlock(
            skip_channels["res2"], channels, channels, memory_channels.get("res2")
        )
        self.pred = nn.Conv2d(channels, 1, 3, padding=1)

    def res4(self, readout: Tensor) -> Tensor:
        return self.compress(readout)

    def to_res3(self, skip: Tensor, coarse: Tensor, memory: Tensor | None) -> Tensor:
        return self.up_16_8(skip, coarse, memory)

    def to_res2(self, skip: Tensor, coarse: Tensor, memory: Tensor | None) -> Tensor:
        return self.up_8_4(skip, coarse, memory)

    def head(self, x: Tensor) -> Tensor:
        return self.pred(x)


DECODERS = {"stm": STMDecoder, "stcn": STCNDecoder}
