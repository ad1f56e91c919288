"""The local (windowed) memory read of LMRC (Eq. 4–5), with HMMN's local tracking.

Each query pixel (y, x) reads only the (2r+1)² memory pixels around the same position:

    W(y, x)    = {(y + dy, x + dx) : |dy| ≤ r, |dx| ≤ r, inside the frame}
    S[p, q]    = q_p · k_q · scale                      ("dot", STM; scale = 1/√Ck by default)
               = (2 q_p · k_q − ‖k_q‖²) · scale          ("l2", STCN; −‖q_p‖² is dropped)
    readout[:, p] = Σ_{q ∈ W(p)} softmax_{q ∈ W(p)}(S[p, q]) · memory_value[:, q]

Shapes: ``query_key``, ``memory_key`` ``[B, Ck, H, W]``, ``memory_value`` ``[B, Cv, H, W]``,
readout ``[B, Cv, H, W]``. Positions of the window outside the frame are padding: they are
**excluded** from the softmax (their exp is 0), not read as zero keys. Every window holds at
least its own centre, so no softmax is empty; radius 0 returns ``memory_value`` itself.

The reference reads the padded memory one window offset at a time, through shifted views: a
logit plane ``[B, H, W]`` per offset, then the readout accumulated offset by offset, so beside
its inputs it holds only the ``[B, (2r+1)², H, W]`` logits (no ``(2r+1)²``-fold copy of the
keys and values as an unfolding would make, and never the (H·W)² affinity of the global read).
A radius larger than the frame is clamped to the frame (the extra offsets are padding
everywhere).

``return_top=k`` also returns a :class:`WindowTop`: the k largest logits of each window, sorted
descending (``-inf`` where the window has fewer than k positions inside the frame; the values
are differentiable), and the (dy, dx) offset of the best memory pixel relative to the query
pixel (HMMN's local tracking; the first best in raster order). The Triton kernel
(``vos.kernels.window_read``) computes both, forward and backward, for k up to
``MAX_KERNEL_TOP_K`` (32, beyond LMRC's 5 and a 5×5 window's 25).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from vos.kernels.contracts import WINDOW_READ_MAX_TOP_K
from vos.ops.dispatch import resolve_backend

Similarity = Literal["dot", "l2"]
Backend = Literal["auto", "torch", "triton"]

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# the largest return_top the kernel's running top-k holds
MAX_KERNEL_TOP_K = WINDOW_READ_MAX_TOP_K


class WindowTop(NamedTuple):
    """The best matches of each query pixel's window (LMRC's comparator, HMMN's tracking)."""

    values: Tensor  # [B, H, W, k] largest logits, descending; -inf past the valid positions
    argmax_offset: Tensor  # [B, H, W, 2] int64 (dy, dx) of the best memory pixel


def clamped_radii(radius: int, height: int, width: int) -> tuple[int, int]:
    """The radius per axis that still reaches a pixel inside an ``height × width`` frame."""
    return min(radius, height - 1), min(radius, width - 1)


def _validate(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    radius: int,
    similarity: str,
    return_top: int | None,
) -> None:
    for name, tensor in (
        ("query_key", query_key),
        ("memory_key", memory_key),
        ("memory_value", memory_value),
    ):
        if tensor.dim() != 4:
            raise ValueError(
                f"window_read: {name} must be [B, C, H, W], got shape {tuple(tensor.shape)}"
            )
    if query_key.shape != memory_key.shape:
        raise ValueError(
            f"window_read: query_key {tuple(query_key.shape)} and memory_key "
            f"{tuple(memory_key.shape)} must have the same shape [B, Ck, H, W]"
        )
    batch, _, height, width = query_key.shape
    if (memory_value.shape[0], *memory_value.shape[2:]) != (batch, height, width):
        raise ValueError(
            f"window_read: memory_value {tuple(memory_value.shape)} must be [B, Cv, H, W] with "
            f"the keys' B, H, W = {(batch, height, width)}"
        )
    if height == 0 or width == 0 or query_key.shape[1] == 0:
        raise ValueError(f"window_read: empty grid or channels, keys {tuple(query_key.shape)}")
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ValueError(f"window_read: radius must be an int >= 0, got {radius!r}")
    if similarity not in ("dot", "l2"):
        raise ValueError(f"window_read: unknown similarity {similarity!r}; expected 'dot' or 'l2'")
    if return_top is not None and (
        isinstance(return_top, bool) or not isinstance(return_top, int) or return_top < 1
    ):
        raise ValueError(f"window_read: return_top must be None or an int >= 1, got {return_top!r}")
    devices = {query_key.device, memory_key.device, memory_value.device}
    if len(devices) != 1:
        raise ValueError(f"window_read: all tensors must be on one device, got {devices}")


def window_read(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    *,
    radius: int,
    similarity: Similarity = "dot",
    scale: float | None = None,
    return_top: int | None = None,
    backend: Backend = "auto",
) -> Tensor | tuple[Tensor, WindowTop]:
    """Read, for every query pixel, the memory in a (2·radius+1)² window around it.

    Args:
        query_key: ``[B, Ck, H, W]``.
        memory_key: ``[B, Ck, H, W]`` (same grid as the query: LMRC reads the previous frame).
        memory_value: ``[B, Cv, H, W]``.
        radius: window half-size r ≥ 0; 0 reads the memory pixel at the same position.
        similarity: ``"dot"`` (STM) or ``"l2"`` (STCN).
        scale: logit scale; ``1/√Ck`` by default.
        return_top: also return the window's k best logits and the argmax offset (the
            kernel holds k ≤ ``MAX_KERNEL_TOP_K``; beyond it ``"auto"`` uses the reference
            and ``"triton"`` raises).
        backend: ``"auto"`` (Triton on CUDA when supported), ``"torch"`` or ``"triton"``.

    Returns:
        readout ``[B, Cv, H, W]`` in ``memory_value``'s dtype, and with ``return_top`` a
        :class:`WindowTop` as well.
    """
    _validate(query_key, memory_key, memory_value, radius, similarity, return_top)
    scale = 1.0 / math.sqrt(query_key.shape[1]) if scale is None else float(scale)
    tensors = [query_key, memory_key, memory_value]
    if return_top is not None and return_top > MAX_KERNEL_TOP_K:
        unsupported = f"the kernel's top-k holds return_top <= {MAX_KERNEL_TOP_K}, got {return_top}"
    elif any(t.dtype not in KERNEL_DTYPES for t in tensors):
        unsupported = f"the kernel takes float16/bfloat16/float32, got {[t.dtype for t in tensors]}"
    else:
        unsupported = None
    if resolve_backend("window_read", backend, tensors, unsupported) == "triton":
        from vos.kernels.window_read import window_read_triton

        # mixed precisions (e.g. fp16 keys, fp32 values under autocast) meet at the wider one
        common = torch.promote_types(
            torch.promote_types(query_key.dtype, memory_key.dtype), memory_value.dtype
        )
        readout, top_slots, _, best = window_read_triton(
            query_key.to(common),
            memory_key.to(common),
            memory_value.to(common),
            radius=radius,
            similarity=similarity,
            scale=scale,
            top_k=return_top or 0,
        )
        readout = readout.to(memory_value.dtype)
        if return_top is None:
            return readout
        return readout, _kernel_top(top_slots, best, query_key.shape, radius)
    return window_read_reference(
        query_key,
        memory_key,
        memory_value,
        radius=radius,
        similarity=similarity,
        scale=scale,
        return_top=return_top,
    )


def window_read_reference(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    *,
    radius: int,
    similarity: Similarity = "dot",
    scale: float | None = None,
    return_top: int | None = None,
) -> Tensor | tuple[Tensor, WindowTop]:
    """The PyTorch reference of :func:`window_read` (differentiable; see the module docstring).

    One shifted view of the padded memory per window offset (`_ShiftedWindowRead`): on a
    2-core CPU LMRC's training step took 38% less time than with the windows unfolded
    (``F.unfold``: its copies, im2col and col2im were most of half the step), and LMRC's
    whole read at 480p about 10x less (docs/benchmarks.md).
    """
    _validate(query_key, memory_key, memory_value, radius, similarity, return_top)
    batch, key_channels, height, width = query_key.shape
    scale = 1.0 / math.sqrt(key_channels) if scale is None else float(scale)
    radius_y, radius_x = clamped_radii(radius, height, width)
    window_width = 2 * radius_x + 1

    # autocast off: fp32 logits whatever the input precision (as in memory_read)
    with torch.autocast(device_type=query_key.device.type, enabled=False):
        # one compute dtype, at least fp32 (float64 stays float64 for gradcheck)
        compute_dtype = torch.float32
        for tensor in (query_key, memory_key, memory_value):
            compute_dtype = torch.promote_types(compute_dtype, tensor.dtype)
        qk, mk, mv = (t.to(compute_dtype) for t in (query_key, memory_key, memory_value))
        readout, logits = _ShiftedWindowRead.apply(
            qk, mk, mv, radius_y, radius_x, scale, similarity == "l2"
        )
        readout = readout.to(memory_value.dtype)
    if return_top is None:
        return readout
    values = _top_logits(logits, return_top).permute(0, 2, 3, 1)  # [B, H, W, k]
    best = logits.argmax(dim=1)  # first maximum: ties go to the smaller offset
    argmax_offset = torch.stack(
        (best // window_width - radius_y, best % window_width - radius_x), dim=-1
    )
    return readout, WindowTop(values=values, argmax_offset=argmax_offset.long())


def _shifted(x: Tensor, oy: int, ox: int, height: int, width: int) -> Tensor:
    """The padded map's pixel at window offset (oy − ry, ox − rx) of every query pixel: a view."""
    return x[..., oy : oy + height, ox : ox + width]


class _ShiftedWindowRead(torch.autograd.Function):
    """Eq. 4-5 through one shifted view of the padded memory per window offset, returning the
    readout ``[B, Cv, H, W]`` and the masked logits ``[B, (2ry+1)(2rx+1), H, W]``.

    The backward is written out so that every offset's gradient is added in place into one
    padded buffer per input; autograd through the views would allocate, zero and add a padded
    tensor per offset and per input (3 × 25 of them for a 5×5 window)."""

    @staticmethod
    def forward(ctx, qk, mk, mv, radius_y: int, radius_x: int, scale: float, l2: bool):
        batch, _, height, width = qk.shape
        # window offset o = (dy + ry)·(2rx+1) + (dx + rx): raster order, as the kernel's
        offsets = [(oy, ox) for oy in range(2 * radius_y + 1) for ox in range(2 * radius_x + 1)]
        padding = (radius_x, radius_x, radius_y, radius_y)  # F.pad: left, right, top, bottom
        padded_key, padded_value = F.pad(mk, padding), F.pad(mv, padding)  # zeros outside
        # True inside the frame: the padding is excluded from the softmax, not a zero key
        padded_inside = F.pad(qk.new_ones(1, height, width, dtype=torch.bool), padding)
        inside = torch.stack(
            [_shifted(padded_inside, oy, ox, height, width) for oy, ox in offsets], dim=1
        )  # [1, K, H, W]

        # Eq. 4: window logits S[b, o, y, x]
        logits = qk.new_empty(batch, len(offsets), height, width)
        for o, (oy, ox) in enumerate(offsets):
            logits[:, o] = (qk * _shifted(padded_key, oy, ox, height, width)).sum(dim=1)
        if l2:  # 2 q·k − ‖k‖²
            padded_norm = F.pad(mk.pow(2).sum(dim=1), padding)  # [B, H+2ry, W+2rx]
            for o, (oy, ox) in enumerate(offsets):
                logits[:, o].mul_(2).sub_(_shifted(padded_norm, oy, ox, height, width))
        logits.mul_(scale).masked_fill_(~inside, float("-inf"))
        # Eq. 5: softmax over the window, weighted sum of the window's values
        weights = torch.softmax(logits, dim=1)
        readout = torch.zeros_like(mv)
        for o, (oy, ox) in enumerate(offsets):
            readout.addcmul_(weights[:, o : o + 1], _shifted(padded_value, oy, ox, height, width))

        ctx.save_for_backward(qk, padded_key, padded_value, weights, inside)
        ctx.window = (offsets, radius_y, radius_x, scale, l2)
        return readout, logits

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_readout, grad_logits):
        qk, padded_key, padded_value, weights, inside = ctx.saved_tensors
        offsets, radius_y, radius_x, scale, l2 = ctx.window
        height, width = qk.shape[2:]

        def at(x: Tensor, o: int) -> Tensor:
            return _shifted(x, *offsets[o], height, width)

        # through Eq. 5: ∂/∂w_o = ⟨grad, v_o⟩ over channels, then the softmax's Jacobian
        grad_scores = torch.zeros_like(weights)
        grad_padded_value = torch.zeros_like(padded_value)
        if grad_readout is not None:
            for o in range(len(offsets)):
                grad_scores[:, o] = (grad_readout * at(padded_value, o)).sum(dim=1)
                at(grad_padded_value, o).addcmul_(weights[:, o : o + 1], grad_readout)
            grad_scores = weights * (grad_scores - (weights * grad_scores).sum(1, keepdim=True))
        if grad_logits is not None:  # the returned logits' own gradient (return_top)
            grad_scores += grad_logits.masked_fill(~inside, 0.0)
        grad_scores *= scale
        # through Eq. 4: S_o = q·k_o (dot) or 2 q·k_o − ‖k_o‖² (l2), times the scale
        grad_dot = 2 * grad_scores if l2 else grad_scores
        grad_query = torch.zeros_like(qk)
        grad_padded_key = torch.zeros_like(padded_key)
        for o in range(len(offsets)):
            coefficient = grad_dot[:, o : o + 1]
            grad_query.addcmul_(coefficient, at(padded_key, o))
            at(grad_padded_key, o).addcmul_(coefficient, qk)
        if l2:  # −‖k‖²: ∂/∂k = −2k, summed over the offsets that read each memory pixel
            grad_norm = torch.zeros_like(padded_key[:, 0])
            for o in range(len(offsets)):
                at(grad_norm, o).sub_(grad_scores[:, o])
            grad_padded_key.addcmul_(grad_norm.unsqueeze(1), padded_key, value=2.0)
        interior = (..., slice(radius_y, radius_y + height), slice(radius_x, radius_x + width))
        return (
            grad_query,
            grad_padded_key[interior],
            grad_padded_value[interior],
            None,
            None,
            None,
            None,
        )


def _kernel_top(top_slots: Tensor, best: Tensor, shape: torch.Size, radius: int) -> WindowTop:
    """The kernel's unsorted top-k slots ``[B, H·W, k]`` and best offset index ``[B, H·W]`` as
    a :class:`WindowTop` (sorting keeps the values differentiable)."""
    batch, _, height, width = shape
    radius_y, radius_x = clamped_radii(radius, height, width)
    values = top_slots.sort(dim=-1, descending=True).values.view(batch, height, width, -1)
    best = best.long().view(batch, height, width)
    window_width = 2 * radius_x + 1
    offsets = torch.stack((best // window_width - radius_y, best % window_width - radius_x), -1)
    return WindowTop(values=values, argmax_offset=offsets)


def _top_logits(logits: Tensor, k: int) -> Tensor:
    """The k largest of ``logits [B, K, ...]`` along K, descending; -inf past K."""
    values = logits.topk(min(k, logits.shape[1]), dim=1).values
    if k > logits.shape[1]:
        missing = logits.new_full(
            (logits.shape[0], k - logits.shape[1], *logits.shape[2:]), -math.inf
        )
        values = torch.cat((values, missing), dim=1)
    return values


def window_read_cost(
    B: int, Ck: int, Cv: int, H: int, W: int, radius: int, dtype_bytes: int
) -> dict[str, int]:
    """Analytic FLOPs and bytes moved by one :func:`window_read` forward.

    FLOPs: 2·Ck (logit) + 2·Cv (weighted value) per (query, memory) pair inside the frame,
    counting multiply and add separately; the softmax's exp/max/sum (O(1) per pair) and the
    l2 norms (O(Ck) per memory pixel) are left out. Pairs are counted exactly: a query row
    y has H − |dy| partners at row offset dy, so pairs = Σ_dy (H − |dy|) · Σ_dx (W − |dx|),
    with the radius clamped to the frame.

    Bytes: the compulsory traffic of an ideal kernel that reads each query key, memory key
    and memory value once (neighbouring windows overlap, so the shifted reads hit cache) and
    writes the readout once: ``dtype_bytes · B · H · W · (2·Ck + 2·Cv)``.
    """
    radius_y, radius_x = clamped_radii(radius, H, W)
    rows = sum(H - abs(dy) for dy in range(-radius_y, radius_y + 1))
    cols = sum(W - abs(dx) for dx in range(-radius_x, radius_x + 1))
    pairs = B * rows * cols
    flops = pairs * (2 * Ck + 2 * Cv)
    bytes_moved = dtype_bytes * B * H * W * (2 * Ck + 2 * Cv)
    return {"flops": int(flops), "bytes": int(bytes_moved)}
