"""The network works on frames whose sides are multiples of its coarsest stride (res4, 1/16)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

STRIDE = 16


def pad_to_stride(x: Tensor, stride: int = STRIDE) -> Tensor:
    """Zero-pad the last two dimensions at the bottom and right to multiples of ``stride``."""
    height, width = x.shape[-2:]
    return F.pad(x, (0, (-width) % stride, 0, (-height) % stride))
