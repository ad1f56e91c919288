"""STM's decoder: readout at res4, refined with the frame's res3 and res2 features (and, for
HMMN, with the fine-scale memory readouts added to those skips)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vos.model.blocks import Refine, ResBlock


class Decoder(nn.Module):
    """Per-object logits ``[B, O, H, W]`` at the input resolution.

    convFM → ResMM at res4, Refine(res3), Refine(res2), a 3×3 conv to one logit, bilinear ×4.
    STM predicts two channels and takes softmax[:, 1]; one logit through a sigmoid is the same
    function with half the head.
    """

    def __init__(
        self,
        readout_channels: int,
        skip_channels: dict[str, int],
        channels: int = 256,
        memory_channels: dict[str, int] | None = None,
    ):
        super().__init__()
        memory_channels = dict(memory_channels or {})
        unknown = set(memory_channels) - {"res3", "res2"}
        if unknown:
            raise ValueError(f"fine memory readouts go to res3/res2 only, got {sorted(unknown)}")
        self.convFM = nn.Conv2d(readout_channels, channels, 3, padding=1)
        self.ResMM = ResBlock(channels)
        self.RF3 = Refine(skip_channels["res3"], channels, memory_channels.get("res3"))
        self.RF2 = Refine(skip_channels["res2"], channels, memory_channels.get("res2"))
        self.pred = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(
        self,
        readout: Tensor,
        skips: dict[str, Tensor],
        output_size: tuple[int, int],
        memory_readouts: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """readout ``[B, O, C, h, w]``; skips shared by the objects, ``[B, C, ·, ·]``;
        ``memory_readouts`` per-object readouts at res3/res2 ``[B, O, C, ·, ·]`` (HMMN)."""
        batch, objects = readout.shape[:2]
        memory_readouts = memory_readouts or {}

        def per_object(x: Tensor) -> Tensor:
            return x.unsqueeze(1).expand(-1, objects, -1, -1, -1).flatten(0, 1)

        def fine(scale: str) -> Tensor | None:
            value = memory_readouts.get(scale)
            return None if value is None else value.flatten(0, 1)

        x = self.ResMM(self.convFM(readout.flatten(0, 1)))
        x = self.RF3(per_object(skips["res3"]), x, fine("res3"))
        x = self.RF2(per_object(skips["res2"]), x, fine("res2"))
        logits = self.pred(F.relu(x))
        logits = F.interpolate(logits, size=output_size, mode="bilinear", align_corners=False)
        return logits.view(batch, objects, *output_size)
