"""The network works on frames whose sides are multiples of its coarsest stride (res4, 1/16).

Frames are zero-padded on both sides, the extra pixel (when odd) at the bottom and right, as
STM's, STCN's, RMNet's and HMMN's inference code does (``pad_divide_by``); outputs are cropped
back with `unpad`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

STRIDE = 16


def padding_for(height: int, width: int, stride: int = STRIDE) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero rows and columns that pad to multiples of ``stride``."""
    extra_h, extra_w = (-height) % stride, (-width) % stride
    return extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2


def pad_to_stride(x: Tensor, stride: int = STRIDE) -> Tensor:
    """Zero-pad the last two dimensions to multiples of ``stride``, centred."""
    return F.pad(x, padding_for(*x.shape[-2:], stride=stride))


def unpad(x: Tensor, height: int, width: int, stride: int = STRIDE) -> Tensor:
    """The ``height × width`` frame inside a tensor that `pad_to_stride` padded."""
    left, _, top, _ = padding_for(height, width, stride)
    return x[..., top : top + height, left : left + width]


def zero_outside(x: Tensor, height: int, width: int, stride: int = STRIDE) -> Tensor:
    """``x`` (padded) with the padding set to zero: what is outside the frame is no object."""
    inside = unpad(x, height, width, stride)
    return F.pad(inside, padding_for(height, width, stride))
