"""Soft aggregation of per-object probabilities (STM; identical in STCN, RMNet, HMMN)."""

from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-7


def soft_aggregate(object_probs: Tensor, present: Tensor | None = None) -> Tensor:
    """Per-object probabilities ``[B, O, H, W]`` -> label logits ``[B, O+1, H, W]``.

    em_0 = Π_i (1 − p_i), em_i = p_i, clamped to [1e-7, 1 − 1e-7]; logit = log(em / (1 − em)).
    A softmax over the O+1 channels gives label probabilities that sum to 1.
    ``present`` ``[B, O]`` bool zeroes the objects a clip or video does not have (padding).
    """
    if present is not None:
        object_probs = object_probs * present.to(object_probs.dtype)[:, :, None, None]
    background = torch.prod(1 - object_probs, dim=1, keepdim=True)
    em = torch.cat([background, object_probs], dim=1).clamp(_EPS, 1 - _EPS)
    return torch.log(em / (1 - em))
