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
    _check_box_options(padding, min_pixels, fallback, "mask_boxes")
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
    too_small = row_pixels.sum(dim=2) < min_pixels
    return _padded_boxes(y0, x0, y1, x1, too_small, (height, width), padding, fallback)


def _padded_boxes(
    y0: Tensor,
    x0: Tensor,
    y1: Tensor,
    x1: Tensor,
    too_small: Tensor,
    frame_hw: tuple[int, int],
    padding: int,
    fallback: str,
) -> Tensor:
    """`mask_boxes`' last step: the object pixels' extent padded by ``padding`` and clamped to
    the frame, or ``fallback`` where the mask is ``too_small``."""
    height, width = frame_hw
    y0 = (y0 - padding).clamp(0, height)
    x0 = (x0 - padding).clamp(0, width)
    y1 = (y1 + padding).clamp(0, height)
    x1 = (x1 + padding).clamp(0, width)
    full = torch.tensor(
        [0, 0, height, width] if fallback == "full" else [0, 0, 0, 0], device=y0.device
    )
    boxes = torch.stack([y0, x0, y1, x1], dim=2)
    return torch.where(too_small.unsqueeze(2), full, boxes)


def _check_box_options(padding: int, min_pixels: int, fallback: str, name: str) -> None:
    if padding < 0 or min_pixels < 0:
        raise ValueError(f"{name}: padding and min_pixels must be >= 0")
    if fallback not in ("full", "empty"):
        raise ValueError(f"{name}: fallback must be 'full' or 'empty', got {fallback!r}")


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
    sampled = _bilinear(torch.cat([source, ones], dim=1), grid.to(source.dtype))
    valid = (sampled[:, channels:] >= _FOOTPRINT_INSIDE).to(source.dtype)
    warped = sampled[:, :channels]
    return warped * valid, valid


# a sample is valid when its bilinear weights inside the frame add up to this (RMNet's test
# on a warped tensor of ones)
_FOOTPRINT_INSIDE = 0.9999


def _bilinear(source: Tensor, grid: Tensor) -> Tensor:
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def warped_mask_boxes(
    previous: Tensor,
    flow: Tensor,
    *,
    threshold: float = 0.5,
    padding: int = 0,
    min_pixels: int = 1,
    fallback: str = "full",
) -> Tensor:
    """``mask_boxes(warp_backward(previous, flow)[0], ...)`` (RMNet's query box, §3.1.2), the
    same boxes, with only the pixels that can reach ``threshold`` warped.

    A warped value is a bilinear mix of at most four pixels of ``previous`` with weights
    summing to at most 1 (then 0 or itself by the validity), so for ``threshold > 0`` it
    reaches the threshold only where one of those four pixels does: inside the box of
    ``previous``'s object pixels widened by one pixel. Pixel p samples p + flow(p), so only
    pixels p within that box shifted by the flow's range can; each (batch, object) warps the
    window of them (one more pixel a side against rounding), all windows in one batched
    sampling, and boxes what it warped. When the windows together are not much smaller than
    the frames (large motion), with a non-positive threshold, a non-finite flow or a NaN in
    ``previous``, and off the CPU, the frames are warped whole.

    On the CPU the whole-frame warp and box were most of a regional read's fixed cost
    (`vos.bench readers`, docs/benchmarks.md); the windows' size is read back to the host once
    per call, which on a GPU costs more than warping the whole frame.
    """
    if previous.ndim != 4:
        raise ValueError(
            f"warped_mask_boxes: previous must be [B, O, H, W], got {tuple(previous.shape)}"
        )
    _check_box_options(padding, min_pixels, fallback, "warped_mask_boxes")
    batch, objects, height, width = previous.shape
    if flow.shape != (batch, 2, height, width):
        raise ValueError(
            f"warped_mask_boxes: flow must be [B, 2, H, W] matching previous "
            f"{tuple(previous.shape)}, got {tuple(flow.shape)}"
        )

    def whole() -> Tensor:
        warped, _ = warp_backward(previous, flow)
        return mask_boxes(
            warped, threshold=threshold, padding=padding, min_pixels=min_pixels, fallback=fallback
        )

    if threshold <= 0 or previous.numel() == 0 or previous.device.type != "cpu":
        return whole()
    with torch.no_grad():
        return _windowed_boxes(previous, flow, threshold, padding, min_pixels, fallback, whole)


def _windowed_boxes(previous, flow, threshold, padding, min_pixels, fallback, whole) -> Tensor:
    batch, objects, height, width = previous.shape
    device = previous.device
    big = max(height, width) + 1
    ys, xs = torch.arange(height, device=device), torch.arange(width, device=device)
    # rows / columns of previous holding a pixel >= threshold: two max reductions of the mask
    row_peaks, col_peaks = previous.amax(dim=3).flatten(0, 1), previous.amax(dim=2).flatten(0, 1)
    rows, cols = row_peaks >= threshold, col_peaks >= threshold  # [B·O, H], [B·O, W]
    source_y0 = torch.where(rows, ys, big).amin(dim=1)
    source_y1 = torch.where(rows, ys, -1).amax(dim=1) + 1
    source_x0 = torch.where(cols, xs, big).amin(dim=1)
    source_x1 = torch.where(cols, xs, -1).amax(dim=1) + 1
    # the flow's range per batch element (u along x, v along y), shared by its objects
    # (one pass over the flow for both ends, [B, 2] each)
    low, high = torch.aminmax(flow.flatten(2), dim=2)
    ranges = torch.stack([low[:, 0], high[:, 0], low[:, 1], high[:, 1]], dim=1).float()
    u_min, u_max, v_min, v_max = ranges.repeat_interleave(objects, dim=0).unbind(1)
    # p samples p + flow(p) and reaches the threshold only when floor(p + flow(p)) lies in
    # [source_y0 - 1, source_y1 - 1]; one more pixel a side for the normalised grid's rounding
    window_y0 = (source_y0 - 2 - v_max).floor().clamp(0, height)
    window_y1 = (source_y1 + 1 - v_min).ceil().clamp(0, height)
    window_x0 = (source_x0 - 2 - u_max).floor().clamp(0, width)
    window_x1 = (source_x1 + 1 - u_min).ceil().clamp(0, width)
    empty = ~rows.any(dim=1)
    window_y1 = torch.where(empty | (window_y1 < window_y0), window_y0, window_y1)
    window_x1 = torch.where(empty | (window_x1 < window_x0), window_x0, window_x1)
    # the one read back to the host: whether the flow's range is finite and the mask has no NaN
    # (a NaN row's max is NaN, which would hide its other pixels), and the windows' size
    finite = torch.isfinite(ranges).all() & ~row_peaks.isnan().any() & ~col_peaks.isnan().any()
    extent = torch.stack([window_y0, window_y1, window_x0, window_x1], dim=1)
    extent = torch.where(finite, extent, 0).long()
    size = torch.stack([(extent[:, 1] - extent[:, 0]).amax(), (extent[:, 3] - extent[:, 2]).amax()])
    flags = torch.cat([finite.long().view(1), size]).tolist()
    if not flags[0]:
        return whole()
    # (no window at all when no object has a pixel: one empty pixel keeps the shapes)
    box_h, box_w = max(1, flags[1]), max(1, flags[2])
    if 2 * box_h * box_w > height * width:
        return whole()  # windows over half the frame: the whole warp costs no more
    window_y0, window_y1, window_x0, window_x1 = extent.unbind(1)
    target_y = window_y0[:, None] + torch.arange(box_h, device=device)  # [B·O, h]
    target_x = window_x0[:, None] + torch.arange(box_w, device=device)  # [B·O, w]
    inside_y = target_y < window_y1[:, None]
    inside_x = target_x < window_x1[:, None]
    target_y, target_x = target_y.clamp(max=height - 1), target_x.clamp(max=width - 1)
    # the windows' flow by flat index (`take`: one small gather, not a strided index)
    element_batch = torch.arange(batch, device=device).repeat_interleave(objects)
    pixel = (element_batch[:, None, None] * height + target_y[:, :, None]) * width
    pixel = pixel + target_x[:, None, :]  # [B·O, h, w]
    flow_u, flow_v = flow[:, 0].contiguous(), flow[:, 1].contiguous()
    # warp_backward's normalised coordinates at the windows' pixels, by the same operations
    # (the same rounding: a box must not move by an ulp)
    scale_x, scale_y = 2 / max(width - 1, 1), 2 / max(height - 1, 1)
    base_x = torch.arange(width, device=device, dtype=flow.dtype) * scale_x - 1
    base_y = torch.arange(height, device=device, dtype=flow.dtype) * scale_y - 1
    grid = torch.stack(
        [
            torch.add(base_x[target_x][:, None, :], flow_u.take(pixel), alpha=scale_x),
            torch.add(base_y[target_y][:, :, None], flow_v.take(pixel), alpha=scale_y),
        ],
        dim=-1,
    ).to(previous.dtype)
    sources = previous.flatten(0, 1).unsqueeze(1)  # [B·O, 1, H, W], a view
    warped = _bilinear(sources, grid)[:, 0]
    # validity: a broadcast tensor of ones sampled alike (nothing frame-sized is written)
    coverage = _bilinear(previous.new_ones(()).expand_as(sources), grid)[:, 0]
    inside = warped * (coverage >= _FOOTPRINT_INSIDE) >= threshold
    inside &= inside_y[:, :, None] & inside_x[:, None, :]
    any_row, any_col = inside.any(dim=2), inside.any(dim=1)
    y0 = torch.where(any_row, target_y, big).amin(dim=1)
    y1 = torch.where(any_row, target_y, -1).amax(dim=1) + 1
    x0 = torch.where(any_col, target_x, big).amin(dim=1)
    x1 = torch.where(any_col, target_x, -1).amax(dim=1) + 1
    too_small = inside.sum(dim=(1, 2)) < min_pixels
    boxes = _padded_boxes(
        *(t.view(batch, objects) for t in (y0, x0, y1, x1, too_small)),
        (height, width),
        padding,
        fallback,
    )
    return boxes


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
