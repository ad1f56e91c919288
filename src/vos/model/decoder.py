"""STM's decoder: readout at res4, refined with the frame's res3 and res2 features."""

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

    def __init__(self, readout_channels: int, skip_channels: dict[str, int], channels: int = 256):
        super().__init__()
        self.convFM = nn.Conv2d(readout_channels, channels, 3, padding=1)
        self.ResMM = ResBlock(channels)
        self.RF3 = Refine(skip_channels["res3"], channels)
        self.RF2 = Refine(skip_channels["res2"], channels)
        self.pred = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(
        self, readout: Tensor, skips: dict[str, Tensor], output_size: tuple[int, int]
    ) -> Tensor:
        """readout ``[B, O, C, h, w]``; skips shared by the objects, ``[B, C, ·, ·]``."""
        batch, objects = readout.shape[:2]

        def per_object(x: Tensor) -> Tensor:
            return x.unsqueeze(1).expand(-1, objects, -1, -1, -1).flatten(0, 1)

        x = self.ResMM(self.convFM(readout.flatten(0, 1)))
        x = self.RF3(per_object(skips["res3"]), x)
        x = self.RF2(per_object(skips["res2"]), x)
        logits = self.pred(F.relu(x))
        logits = F.interpolate(logits, size=output_size, mode="bilinear", align_corners=False)
        return logits.view(batch, objects, *output_size)
