"""Small building blocks of the encoders and decoders (STM's and STCN's, without BatchNorm)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def per_object(frame_features: Tensor, objects_batch: Tensor) -> Tensor:
    """A frame's features ``[B, C, h, w]`` repeated for the ``B·O`` object-minor batch of
    ``objects_batch`` (object o of frame b at ``b·O + o``)."""
    return frame_features.repeat_interleave(objects_batch.shape[0] // frame_features.shape[0], 0)


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


class UpsampleBlock(nn.Module):
    """STCN's decoder step: ``ResBlock(skip_conv(skip) + up(coarse))``.

    With ``memory_channels`` (HMMN's reader on STCN's network) a fine memory readout enters
    beside the skip through a bias-free 3×3 conv, as `Refine` takes it.
    """

    def __init__(
        self,
        skip_channels: int,
        up_channels: int,
        out_channels: int,
        memory_channels: int | None = None,
    ):
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_channels, up_channels, 3, padding=1)
        self.memory_conv = (
            None
            if memory_channels is None
            else nn.Conv2d(memory_channels, up_channels, 3, padding=1, bias=False)
        )
        self.out_conv = ResBlock(up_channels, out_channels)

    def forward(self, skip: Tensor, coarse: Tensor, memory: Tensor | None = None) -> Tensor:
        """``skip [B, C, H, W]`` of the frame, ``coarse`` and ``memory`` per object
        ``[B·O, ·, ·, ·]`` (object-minor): the skip conv runs once per frame, as STCN's decoder
        broadcasts it over the objects."""
        x = per_object(self.skip_conv(skip), coarse)
        if memory is not None:
            if self.memory_conv is None:
                raise ValueError("UpsampleBlock got a memory readout but was built without one")
            x = x + self.memory_conv(memory)
        x = x + F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.out_conv(x)


class CBAM(nn.Module):
    """Convolutional block attention (Woo et al., 2018), as STCN's value fusion uses it: a
    channel gate from average- and max-pooled features through one shared MLP, then a spatial
    gate from the channel-wise max and mean through a 7×7 conv."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.channel_mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels)
        )
        self.spatial_conv = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.channel_mlp(x.mean(dim=(2, 3))) + self.channel_mlp(x.amax(dim=(2, 3)))
        x = x * torch.sigmoid(pooled)[:, :, None, None]
        summary = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial_conv(summary))


class FeatureFusion(nn.Module):
    """STCN's value fusion: the value trunk's res4 features with the frame's key-encoder res4
    features, ``block2(x + CBAM(x))`` with ``x = block1([trunk, frame])``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.block1 = ResBlock(in_channels, out_channels)
        self.attention = CBAM(out_channels)
        self.block2 = ResBlock(out_channels)

    def forward(self, trunk: Tensor, frame_features: Tensor) -> Tensor:
        x = self.block1(torch.cat([trunk, frame_features], dim=1))
        return self.block2(x + self.attention(x))
