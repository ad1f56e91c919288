"""Bootstrapped cross-entropy (STCN): the loss over the hardest p% of pixels."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from vos.data.palette import VOID_LABEL


def bootstrap_fraction(step: int, start_step: int, end_step: int, end_fraction: float) -> float:
    """1.0 before ``start_step``, linear to ``end_fraction`` at ``end_step``, then constant."""
    if step < start_step:
        return 1.0
    if step >= end_step or end_step <= start_step:
        return end_fraction
    progress = (step - start_step) / (end_step - start_step)
    return 1.0 + (end_fraction - 1.0) * progress


def bootstrapped_cross_entropy(logits: Tensor, labels: Tensor, fraction: float) -> Tensor:
    """logits ``[B, C, H, W]``, labels ``[B, H, W]`` (255 ignored); mean over the hardest pixels."""
    raw = F.cross_entropy(logits, labels, ignore_index=VOID_LABEL, reduction="none").flatten()
    valid = raw[labels.flatten() != VOID_LABEL]
    if valid.numel() == 0:
        return logits.sum() * 0.0
    if fraction >= 1.0:
        return valid.mean()
    k = max(1, int(valid.numel() * fraction))
    return valid.topk(k, sorted=False).values.mean()
