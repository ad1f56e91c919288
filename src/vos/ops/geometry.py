"""Small tensor helpers the readers share: boxes, flow warping, positional encoding, and
index expansion between feature scales. Each has its paper's definition in its docstring."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def mask_boxes(
    probs: Tensor,
    *,
    threshold: float = 0.5,
    padding: int = 0,
    min_pixels: int = 1,
    fallback: str = "full",
) -> Tensor:
    """RMNet's regional attention box (Eq. 1–2): a padded box around each soft mask.

    Args:
        probs: ``[B, O, H, W]`` soft masks.
        threshold: a pixel belongs to the object when its probability is ≥ ``threshold``.
        padding: pixels added on every side of the box, then clamped to the frame (φ).
        min_pixels: with fewer object pixels than this the mask is not trusted (η) and the
            box is ``fallback``:
        fallback: ``"full"``, the whole frame (RMNet's query: a global read), or ``"empty"``,
            no pixel at all (a memory frame where the object is absent contributes nothing).

    Returns:
        ``boxes [B, O, 4]`` int64 as (y0, x0, y1, x1), end-exclusive. Two reductions of the
        thresholded mask (its rows' pixel counts, its columns' any) serve the box and the count.
    """
    if probs.ndim != 4:
        raise ValueError(f"mask_boxes: probs must be [B, O, H, W], got {tuple(probs.shape)}")
    if padding < 0 or min_pixels < 0:
        raise ValueError("mask_boxes: padding and min_pixels must be >= 0")
    if fallback not in ("full", "empty"):
        raise ValueError(f"mask_boxes: fallback must be 'full' or 'empty', got {fallback!r}")
    height, width = probs.shape[-2:]
    inside = probs >= threshold
    row_pixels = inside.sum(dim=3)  # [B, O, H]
    rows = row_pixels > 0
    cols = inside.any(dim=2)  # [B, O, W]
    ys = torch.arange(height, device=probs.device)
    xs = torch.arange(width, device=probs.device)
    big = max(height, width) + 1
    y0 = torch.where(rows, ys, big).amin(dim=2)
    y1 = torch.where(rows, ys, -1).amax(dim=2) + 1
    x0 = torch.where(cols, xs, big).amin(dim=2)
    x1 = torch.where(cols, xs, -1).amax(dim=2) + 1
    y0 = (y0 - padding).clamp(0, height)
    x0 = (x0 - padding).clamp(0, width)
    y1 = (y1 + padding).clamp(0, height)
    x1 = (x1 + padding).clamp(0, width)
    too_small = row_pixels.sum(dim=2) < min_pixels
    full = torch.tensor(
        [0, 0, height, width] if fallback == "full" else [0, 0, 0, 0], device=probs.device
    )
    boxes = torch.stack([y0, x0, y1, x1], dim=2)
    return torch.where(too_small.unsqueeze(2), full, boxes)


def boxes_from_masks(
    probs: Tensor,
    *,
    threshold: float = 0.5,
    padding: int = 0,
    min_pixels: int = 1,
    fallback: str = "full",
) -> tuple[Tensor, Tensor]:
    """`mask_boxes` and the boxes as maps: ``(boxes [B, O, 4], maps [B, O, H, W] bool)``,
    True inside each box."""
    boxes = mask_boxes(
        probs, threshold=threshold, padding=padding, min_pixels=min_pixels, fallback=fallback
    )
    height, width = probs.shape[-2:]
    ys = torch.arange(height, device=probs.device)
    xs = torch.arange(width, device=probs.device)
    in_y = (ys.view(1, 1, height) >= boxes[..., 0:1]) & (ys.view(1, 1, height) < boxes[..., 2:3])
    in_x = (xs.view(1, 1, width) >= boxes[..., 1:2]) & (xs.view(1, 1, width) < boxes[..., 3:4])
    return boxes, in_y.unsqueeze(3) & in_x.unsqueeze(2)


def warp_backward(source: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    """Sample ``source`` (frame t−1) at ``p + flow(p)``: frame t's view of it (RMNet §3.2).

    ``flow [B, 2, H, W]`` is backward flow (u, v) in pixels mapping frame t to frame t−1.
    Bilinear sampling; samples that fall outside the frame are 0. Returns the warped
    ``[B, C, H, W]`` and the validity ``[B, 1, H, W]`` (1 where the whole bilinear footprint
    was inside the frame, as RMNet's ≥ 0.9999 test on a warped ones tensor).
    """
    if flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[-2:] != source.shape[-2:]:
        raise ValueError(
            f"warp_backward: flow must be [B, 2, H, W] matching source {tuple(source.shape)}, "
            f"got {tuple(flow.shape)}"
        )
    batch, channels, height, width = source.shape
    # grid_sample's normalised coordinates 2(p + flow)/(size − 1) − 1, one fused add per axis
    # (on the CPU the per-pixel arithmetic cost more than the sampling)
    scale_x, scale_y = 2 / max(width - 1, 1), 2 / max(height - 1, 1)
    xs = torch.arange(width, device=flow.device, dtype=flow.dtype) * scale_x - 1
    ys = torch.arange(height, device=flow.device, dtype=flow.dtype) * scale_y - 1
    if torch.is_grad_enabled() and flow.requires_grad:
        grid = torch.stack(
            [
                torch.add(xs, flow[:, 0], alpha=scale_x),
                torch.add(ys[:, None], flow[:, 1], alpha=scale_y),
            ],
            dim=-1,
        )
    else:  # written in place, without the stack's copy (out= has no autograd)
        grid = flow.new_empty(batch, height, width, 2)
        torch.add(xs, flow[:, 0], alpha=scale_x, out=grid[..., 0])
        torch.add(ys[:, None], flow[:, 1], alpha=scale_y, out=grid[..., 1])
    # the validity is a channel of ones sampled with the source: one sampling, same weights
    ones = source.new_ones(batch, 1, height, width)
    sampled = F.grid_sample(
        torch.cat([source, ones], dim=1),
        grid.to(source.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    valid = (sampled[:, channels:] >= 0.9999).to(source.dtype)
    warped = sampled[:, :channels]
    return warped * valid, valid


def sine_positional_encoding(
    channels: int, height: int, width: int, *, temperature: float = 10000.0
) -> Tensor:
    """The fixed 2-D sine/cosine encoding ``[channels, H, W]`` (LCM's PGM, after DETR).

    Half the channels encode y, half x; for each, pairs (sin, cos) at frequencies
    ``temperature^(−2i/d)`` of the position normalised to [0, 2π]. Every position gets a
    distinct code.
    """
    if channels % 4:
        raise ValueError(
            f"sine_positional_encoding: channels must be a multiple of 4, got {channels}"
        )
    per_axis = channels // 2
    frequencies = temperature ** (-torch.arange(0, per_axis, 2, dtype=torch.float64) / per_axis)
    ys = (torch.arange(height, dtype=torch.float64) + 0.5) / height * 2 * math.pi
    xs = (torch.arange(width, dtype=torch.float64) + 0.5) / width * 2 * math.pi

    def encode(positions: Tensor) -> Tensor:  # [L] -> [per_axis, L]
        angles = frequencies[:, None] * positions[None, :]
        return torch.stack([angles.sin(), angles.cos()], dim=1).flatten(0, 1)

    code_y = encode(ys)[:, :, None].expand(-1, height, width)
    code_x = encode(xs)[:, None, :].expand(-1, height, width)
    return torch.cat([code_y, code_x], dim=0).float()


def expand_index(index: Tensor, coarse_hw: tuple[int, int], factor: int) -> Tensor:
    """Coarse memory indices -> their children on a grid ``factor`` times finer (HMMN §3.2).

    ``index [..., K]`` indexes memory pixels ``t·h·w + y·w + x`` of a coarse grid (h, w); the
    result ``[..., K·factor²]`` indexes ``t·(fh·fw) + (f·y + i)·fw + (f·x + j)`` on the fine
    grid (fh, fw) = (f·h, f·w), children of each coarse pixel in raster order (i, j).
    """
    height, width = coarse_hw
    frame, rest = index // (height * width), index % (height * width)
    y, x = rest // width, rest % width
    fine_h, fine_w = factor * height, factor * width
    offsets = torch.arange(factor, device=index.device)
    fy = factor * y.unsqueeze(-1) + offsets  # [..., K, f]
    fx = factor * x.unsqueeze(-1) + offsets
    fine = (
        frame.unsqueeze(-1).unsqueeze(-1) * (fine_h * fine_w)
        + fy.unsqueeze(-1) * fine_w
        + fx.unsqueeze(-2)
    )
    return fine.flatten(-3)
