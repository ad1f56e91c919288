"""Small building blocks shared by the encoders and the decoder (STM's, without BatchNorm)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ResBlock(nn.Module):
    """STM's pre-activation residual block: ``x + conv(relu(conv(relu(x))))``.

    A 3×3 convolution maps the skip when the channel count changes.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or in_channels
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (
            None
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 3, padding=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        residual = self.conv2(F.relu(self.conv1(F.relu(x))))
        return (x if self.skip is None else self.skip(x)) + residual


class Refine(nn.Module):
    """STM's refinement module: merge a skip feature with the upsampled coarser output."""

    def __init__(self, skip_channels: int, channels: int):
        super().__init__()
        self.convFS = nn.Conv2d(skip_channels, channels, 3, padding=1)
        self.ResFS = ResBlock(channels)
        self.ResMM = ResBlock(channels)

    def forward(self, skip: Tensor, coarse: Tensor) -> Tensor:
        s = self.ResFS(self.convFS(skip))
        m = s + F.interpolate(coarse, size=s.shape[-2:], mode="bilinear", align_corners=False)
        return self.ResMM(m)
