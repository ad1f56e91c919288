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
    """STM's refinement module: merge a skip feature with the upsampled coarser output.

    With ``memory_channels`` (HMMN) a memory readout at the skip's scale is added to the skip
    through a bias-free 3×3 conv before ``ResFS``: ``ResFS(convFS(skip) + convMemory(mem))``.
    """

    def __init__(self, skip_channels: int, channels: int, memory_channels: int | None = None):
        super().__init__()
        self.convFS = nn.Conv2d(skip_channels, channels, 3, padding=1)
        self.convMemory = (
            None
            if memory_channels is None
            else nn.Conv2d(memory_channels, channels, 3, padding=1, bias=False)
        )
        self.ResFS = ResBlock(channels)
        self.ResMM = ResBlock(channels)

    def forward(self, skip: Tensor, coarse: Tensor, memory: Tensor | None = None) -> Tensor:
        s = self.convFS(skip)
        if memory is not None:
            if self.convMemory is None:
                raise ValueError("Refine got a memory readout but was built without one")
            s = s + self.convMemory(memory)
        s = self.ResFS(s)
        m = s + F.interpolate(coarse, size=s.shape[-2:], mode="bilinear", align_corners=False)
        return self.ResMM(m)
