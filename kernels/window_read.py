"""Triton kernels of the windowed memory read (`vos.ops.window_read`), forward and backward.

Same math and names as the reference in ``vos/ops/window_read.py``: query pixel p = (y, x)
reads the memory pixels q = p + (dy, dx), |dy| ≤ ry, |dx| ≤ rx, inside the frame, with

    S[p, q] = q_p · k_q · scale   ("dot")   or   (2 q_p · k_q − ‖k_q‖²) · scale   ("l2")
    P[p, q] = softmax over the window of S                                   (LMRC Eq. 4)
    O[:, p] = Σ_q P[p, q] · v_q                                               (LMRC Eq. 5)

Tensors are ``[B, C, H·W]`` contiguous, so the memory pixel at offset (dy, dx) of a block of
query pixels is the same block shifted by ``dy·W + dx`` in the flattened index; border masks
say which lanes are inside the frame. Positions outside the frame are excluded (exp = 0).

Forward (one program per batch, block of BLOCK_M query pixels, block of BLOCK_CV value
channels): loop over the (2ry+1)(2rx+1) offsets with an online softmax (running max and sum,
rescaling the accumulator), never holding more than one offset's logits. It stores the
log-sum-exp per query pixel for the backward.

Backward, with dO = ∂L/∂O and Δ_p = Σ_c dO[c, p] · O[c, p] = Σ_q P[p, q] · dP[p, q]:

    P[p, q]  = exp(S[p, q] − lse_p)                                           (recomputed)
    dP[p, q] = dO_p · v_q ,   dS[p, q] = P[p, q] · (dP[p, q] − Δ_p)           (softmax backward)
    dQ_p = Σ_q dS[p, q] · ∂S/∂q_p ,  dK_q = Σ_p dS[p, q] · ∂S/∂k_q ,  dV_q = Σ_p P[p, q] · dO_p

with ∂S/∂q_p = scale·k_q, ∂S/∂k_q = scale·q_p ("dot") and 2·scale·k_q, 2·scale·(q_p − k_q)
("l2"). dQ is a query-side loop over the window, like the forward; it also computes Δ from
the fp32 probabilities (not from the readout rounded to fp16) and stores it. dK and dV are computed
from the **memory side** rather than by atomic adds: the query pixels whose window contains
memory pixel q are exactly q − (dy, dx) over the same offsets, so one program per block of
memory pixels gathers its (2ry+1)(2rx+1) partners and writes its dK, dV once. No atomics
means no zeroing pre-hook, no contention on the (2r+1)² writers of every memory pixel, and
deterministic gradients, at the price of recomputing the logits once more (the logits cost
2·Ck per pair, no more than the atomic adds of dK would have moved).

Inputs may be fp16, bf16 or fp32; every load is cast to fp32 (the interpreter computes bf16
wrongly, and logits need fp32 anyway), accumulation is fp32, outputs are in the input dtype.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _configs() -> list[triton.Config]:
    """Block sizes to tune on a GPU; one config under the interpreter (it cannot autotune)."""
    if _INTERPRETED:
        # small blocks so the tests' tiny grids still span several blocks and partial blocks
        return [triton.Config({"BLOCK_M": 32, "BLOCK_CV": 16}, num_warps=1, num_stages=1)]
    return [
        triton.Config(
            {"BLOCK_M": block_m, "BLOCK_CV": block_cv}, num_warps=warps, num_stages=stages
        )
        for block_m, block_cv, warps in (
            (32, 64, 2),
            (64, 32, 4),
            (64, 64, 4),
            (128, 32, 4),
            (128, 64, 8),
            (256, 32, 8),
        )
        for stages in (1, 2)
    ]


_TUNING_KEY = ["M", "key_channels", "value_channels", "radius_y", "radius_x"]


@triton.jit
def _load_rows(ptr, base, offs_c, c_ok, offs_p, valid_p, M):
    # a [B, C, M] tensor's tile [pixels, channels] in fp32; outside pixels load as zeros
    return tl.load(
        ptr + base + offs_c[None, :] * M + offs_p[:, None],
        mask=valid_p[:, None] & c_ok[None, :],
        other=0.0,
    ).to(tl.float32)


@triton.jit
def _pixel_block(M, width, BLOCK_M: tl.constexpr):
    # this program's block of pixels (grid axis 1), which are in the frame, and their (y, x)
    offs = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    return offs, offs < M, offs // width, offs % width


@triton.jit
def _row_inside(in_frame, y, dy, height):
    # in the frame, and the pixel dy rows away is too
    return in_frame & (y + dy >= 0) & (y + dy < height)


@triton.jit
def _shift(offs, x, row_ok, dy, dx, width):
    # the pixel at offset (dy, dx) in the flattened index, and whether it is inside the frame
    inside = row_ok & (x + dx >= 0) & (x + dx < width)
    return offs + dy * width + dx, inside


@triton.jit
def _window_logits(query, key, key_norm, scale, SIMILARITY_L2: tl.constexpr):
    # Eq. 4: the logit of one window offset, q_p·k_q·scale or (2 q_p·k_q − ‖k_q‖²)·scale
    dot = tl.sum(query * key, axis=1)
    if SIMILARITY_L2:
        logits = (2.0 * dot - key_norm) * scale
    else:
        logits = dot * scale
    return logits


@triton.jit
def _query_side_logits(
    query,
    memory_key_ptr,
    key_base,
    offs_c,
    c_ok,
    offs_n,
    inside,
    M,
    scale,
    SIMILARITY_L2: tl.constexpr,
):
    # the shifted keys [BLOCK_M, BLOCK_C] of a block of query pixels and their logits
    key = _load_rows(memory_key_ptr, key_base, offs_c, c_ok, offs_n, inside, M)
    logits = _window_logits(query, key, tl.sum(key * key, axis=1), scale, SIMILARITY_L2)
    return key, logits


@triton.jit
def _grad_probs(
    grad_readout_ptr,
    memory_value_ptr,
    value_base,
    offs_m,
    query_ok,
    offs_n,
    memory_ok,
    M,
    value_channels,
    BLOCK_CV: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    # dP[p, q] = dO_p · v_q over all value channels, for the pairs (offs_m, offs_n)
    grad_probs = tl.zeros([BLOCK_M], tl.float32)
    for cv0 in range(0, value_channels, BLOCK_CV):
        offs_cv = cv0 + tl.arange(0, BLOCK_CV)
        cv_ok = offs_cv < value_channels
        grad_out = _load_rows(grad_readout_ptr, value_base, offs_cv, cv_ok, offs_m, query_ok, M)
        value = _load_rows(memory_value_ptr, value_base, offs_cv, cv_ok, offs_n, memory_ok, M)
        grad_probs += tl.sum(grad_out * value, axis=1)
    return grad_probs


@triton.autotune(configs=_configs(), key=_TUNING_KEY)
@triton.jit
def _window_read_fwd_kernel(
    query_key_ptr,  # [B, Ck, M]
    memory_key_ptr,  # [B, Ck, M]
    memory_value_ptr,  # [B, Cv, M]
    readout_ptr,  # [B, Cv, M]
    lse_ptr,  # [B, M] fp32
    height,
    width,
    M,
    key_channels,
    value_channels,
    radius_y,
    radius_x,
    scale,
    SIMILARITY_L2: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_CV: tl.constexpr,
):
    batch = tl.program_id(0).to(tl.int64)
    offs_m, query_in_frame, y, x = _pixel_block(M, width, BLOCK_M)
    offs_cv = tl.program_id(2) * BLOCK_CV + tl.arange(0, BLOCK_CV)
    offs_c = tl.arange(0, BLOCK_C)
    c_ok = offs_c < key_channels
    cv_ok = offs_cv < value_channels
    key_base = batch * key_channels * M
    value_base = batch * value_channels * M

    query = _load_rows(
        query_key_ptr, key_base, offs_c, c_ok, offs_m, query_in_frame, M
    )  # [BLOCK_M, BLOCK_C]

    running_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    running_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_CV], tl.float32)
    for dy in range(-radius_y, radius_y + 1):
        row_ok = _row_inside(query_in_frame, y, dy, height)
        for dx in range(-radius_x, radius_x + 1):
            offs_n, inside = _shift(offs_m, x, row_ok, dy, dx, width)
            _, logits = _query_side_logits(
                query, memory_key_ptr, key_base, offs_c, c_ok, offs_n, inside, M, scale,
                SIMILARITY_L2,
            )  # fmt: skip
            # padding is excluded (-inf), not a zero key
            logits = tl.where(inside, logits, float("-inf"))
            # online softmax: rescale what was accumulated under the old running max
            new_max = tl.maximum(running_max, logits)
            safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)  # nothing seen yet
            rescale = tl.exp(running_max - safe_max)
            weights = tl.exp(logits - safe_max)
            running_sum = running_sum * rescale + weights
            value = _load_rows(memory_value_ptr, value_base, offs_cv, cv_ok, offs_n, inside, M)
            # Eq. 5: weighted sum of the window's values (normalised after the loop)
            acc = acc * rescale[:, None] + weights[:, None] * value
            running_max = new_max

    # every in-frame query holds its own pixel, so running_sum ≥ 1 there
    running_sum = tl.where(query_in_frame, running_sum, 1.0)
    readout = acc / running_sum[:, None]
    tl.store(
        readout_ptr + value_base + offs_cv[None, :] * M + offs_m[:, None],
        readout.to(readout_ptr.dtype.element_ty),
        mask=query_in_frame[:, None] & cv_ok[None, :],
    )
    if tl.program_id(2) == 0:
        lse = tl.where(query_in_frame, running_max, 0.0) + tl.log(running_sum)
        tl.store(lse_ptr + batch * M + offs_m, lse, mask=query_in_frame)


@triton.autotune(configs=_configs(), key=_TUNING_KEY)
@triton.jit
def _window_read_bwd_dq_kernel(
    query_key_ptr,  # [B, Ck, M]
    memory_key_ptr,  # [B, Ck, M]
    memory_value_ptr,  # [B, Cv, M]
    grad_readout_ptr,  # [B, Cv, M]
    lse_ptr,  # [B, M] fp32
    delta_ptr,  # [B, M] fp32, written here: Σ_c dO · O, read by the dK/dV kernel
    grad_query_ptr,  # [B, Ck, M]
    height,
    width,
    M,
    key_channels,
    value_channels,
    radius_y,
    radius_x,
    scale,
    SIMILARITY_L2: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_CV: tl.constexpr,
):
    batch = tl.program_id(0).to(tl.int64)
    offs_m, query_in_frame, y, x = _pixel_block(M, width, BLOCK_M)
    offs_c = tl.arange(0, BLOCK_C)
    c_ok = offs_c < key_channels
    key_base = batch * key_channels * M
    value_base = batch * value_channels * M

    query = _load_rows(query_key_ptr, key_base, offs_c, c_ok, offs_m, query_in_frame, M)
    lse = tl.load(lse_ptr + batch * M + offs_m, mask=query_in_frame, other=0.0)

    # dQ_p = Σ_q P (dP − Δ_p) k_q = Σ_q P dP k_q − Δ_p Σ_q P k_q, with Δ_p = Σ_q P dP: one pass
    # gives all three sums, and Δ comes from fp32 probabilities instead of the rounded readout
    prob_grad_key = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)  # Σ_q P dP k_q
    prob_key = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)  # Σ_q P k_q
    delta = tl.zeros([BLOCK_M], tl.float32)  # Σ_q P dP = Σ_c dO · O
    for dy in range(-radius_y, radius_y + 1):
        row_ok = _row_inside(query_in_frame, y, dy, height)
        for dx in range(-radius_x, radius_x + 1):
            offs_n, inside = _shift(offs_m, x, row_ok, dy, dx, width)
            # Eq. 4 recomputed: P = exp(S − lse)
            key, logits = _query_side_logits(
                query, memory_key_ptr, key_base, offs_c, c_ok, offs_n, inside, M, scale,
                SIMILARITY_L2,
            )  # fmt: skip
            probs = tl.where(inside, tl.exp(logits - lse), 0.0)
            # dP = dO_p · v_q over all value channels
            grad_probs = _grad_probs(
                grad_readout_ptr, memory_value_ptr, value_base, offs_m, query_in_frame, offs_n,
                inside, M, value_channels, BLOCK_CV, BLOCK_M,
            )  # fmt: skip
            prob_grad_key += (probs * grad_probs)[:, None] * key
            prob_key += probs[:, None] * key
            delta += probs * grad_probs

    # softmax backward, then ∂S/∂q_p (the scale is applied once, here)
    grad_query = prob_grad_key - delta[:, None] * prob_key
    if SIMILARITY_L2:
        grad_query = grad_query * (2.0 * scale)
    else:
        grad_query = grad_query * scale
    tl.store(delta_ptr + batch * M + offs_m, delta, mask=query_in_frame)
    tl.store(
        grad_query_ptr + key_base + offs_c[None, :] * M + offs_m[:, None],
        grad_query.to(grad_query_ptr.dtype.element_ty),
        mask=query_in_frame[:, None] & c_ok[None, :],
    )


@triton.autotune(configs=_configs(), key=_TUNING_KEY)
@triton.jit
def _window_read_bwd_dkdv_kernel(
    query_key_ptr,  # [B, Ck, M]
    memory_key_ptr,  # [B, Ck, M]
    memory_value_ptr,  # [B, Cv, M]
    grad_readout_ptr,  # [B, Cv, M]
    lse_ptr,  # [B, M] fp32
    delta_ptr,  # [B, M] fp32, from the dQ kernel
    grad_key_ptr,  # [B, Ck, M]
    grad_value_ptr,  # [B, Cv, M]
    height,
    width,
    M,
    key_channels,
    value_channels,
    radius_y,
    radius_x,
    scale,
    SIMILARITY_L2: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_CV: tl.constexpr,
):
    # one program per block of MEMORY pixels (offs_n) and block of value channels; the
    # programs of the first value block also compute dK, which needs dP over every channel
    batch = tl.program_id(0).to(tl.int64)
    offs_n, memory_in_frame, y, x = _pixel_block(M, width, BLOCK_M)
    first_value_block = tl.program_id(2) == 0
    offs_cv = tl.program_id(2) * BLOCK_CV + tl.arange(0, BLOCK_CV)
    offs_c = tl.arange(0, BLOCK_C)
    c_ok = offs_c < key_channels
    cv_ok = offs_cv < value_channels
    key_base = batch * key_channels * M
    value_base = batch * value_channels * M

    key = _load_rows(
        memory_key_ptr, key_base, offs_c, c_ok, offs_n, memory_in_frame, M
    )  # [BLOCK_M, BLOCK_C]
    key_norm = tl.sum(key * key, axis=1)

    grad_value = tl.zeros([BLOCK_M, BLOCK_CV], tl.float32)
    grad_key = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)
    grad_logits_sum = tl.zeros([BLOCK_M], tl.float32)  # Σ_p dS, for the l2 term −2·scale·k_q
    for dy in range(-radius_y, radius_y + 1):
        # memory pixel q sits at offset (dy, dx) of query pixel p = q − (dy, dx)
        row_ok = _row_inside(memory_in_frame, y, -dy, height)
        for dx in range(-radius_x, radius_x + 1):
            offs_m, inside = _shift(offs_n, x, row_ok, -dy, -dx, width)
            query = _load_rows(query_key_ptr, key_base, offs_c, c_ok, offs_m, inside, M)
            lse = tl.load(lse_ptr + batch * M + offs_m, mask=inside, other=0.0)
            # Eq. 4 recomputed from the memory side: P[p, q] = exp(S[p, q] − lse_p)
            logits = _window_logits(query, key, key_norm, scale, SIMILARITY_L2)
            probs = tl.where(inside, tl.exp(logits - lse), 0.0)
            # dV_q += P[p, q] · dO_p (this program's value channels)
            grad_out = _load_rows(grad_readout_ptr, value_base, offs_cv, cv_ok, offs_m, inside, M)
            grad_value += probs[:, None] * grad_out
            if first_value_block:
                # dP[p, q] = dO_p · v_q over all value channels, then the softmax backward
                grad_probs = _grad_probs(
                    grad_readout_ptr, memory_value_ptr, value_base, offs_m, inside, offs_n,
                    memory_in_frame, M, value_channels, BLOCK_CV, BLOCK_M,
                )  # fmt: skip
                delta = tl.load(delta_ptr + batch * M + offs_m, mask=inside, other=0.0)
                grad_logits = probs * (grad_probs - delta)
                # dK_q += dS[p, q] · q_p (scale and the l2 term applied once, below)
                grad_key += grad_logits[:, None] * query
                grad_logits_sum += grad_logits

    tl.store(
        grad_value_ptr + value_base + offs_cv[None, :] * M + offs_n[:, None],
        grad_value.to(grad_value_ptr.dtype.element_ty),
        mask=memory_in_frame[:, None] & cv_ok[None, :],
    )
    if first_value_block:
        if SIMILARITY_L2:
            # ∂S/∂k_q = 2·scale·(q_p − k_q)
            grad_key = (grad_key - grad_logits_sum[:, None] * key) * (2.0 * scale)
        else:
            grad_key = grad_key * scale
        tl.store(
            grad_key_ptr + key_base + offs_c[None, :] * M + offs_n[:, None],
            grad_key.to(grad_key_ptr.dtype.element_ty),
            mask=memory_in_frame[:, None] & c_ok[None, :],
        )


def _grid(batch: int, pixels: int, channels: int):
    def grid(meta):
        return (
            batch,
            triton.cdiv(pixels, meta["BLOCK_M"]),
            triton.cdiv(channels, meta["BLOCK_CV"]),
        )

    return grid


def _kernel_arguments(query_key: Tensor, memory_value: Tensor, radius_y: int, radius_x: int):
    _, key_channels, height, width = query_key.shape
    return {
        "height": height,
        "width": width,
        "M": height * width,
        "key_channels": key_channels,
        "value_channels": memory_value.shape[1],
        "radius_y": radius_y,
        "radius_x": radius_x,
    }


class WindowReadFunction(torch.autograd.Function):
    """Windowed read with the Triton forward and backward; use :func:`window_read_triton`."""

    @staticmethod
    def forward(
        ctx,
        query_key: Tensor,
        memory_key: Tensor,
        memory_value: Tensor,
        radius: int,
        similarity: str,
        scale: float,
    ) -> Tensor:
        _check_inputs(query_key, memory_key, memory_value, radius, similarity)
        query_key, memory_key, memory_value = (
            t.contiguous() for t in (query_key, memory_key, memory_value)
        )
        batch, key_channels, height, width = query_key.shape
        value_channels = memory_value.shape[1]
        radius_y, radius_x = min(radius, height - 1), min(radius, width - 1)
        readout = torch.empty_like(memory_value)
        lse = torch.empty(batch, height * width, device=query_key.device, dtype=torch.float32)
        common = {
            **_kernel_arguments(query_key, memory_value, radius_y, radius_x),
            "scale": scale,
            "SIMILARITY_L2": similarity == "l2",
            "BLOCK_C": triton.next_power_of_2(key_channels),
        }
        _window_read_fwd_kernel[_grid(batch, height * width, value_channels)](
            query_key, memory_key, memory_value, readout, lse, **common
        )
        ctx.save_for_backward(query_key, memory_key, memory_value, lse)
        ctx.common = common
        return readout

    @staticmethod
    def backward(ctx, grad_readout: Tensor):
        query_key, memory_key, memory_value, lse = ctx.saved_tensors
        common = ctx.common
        batch, pixels = lse.shape
        grad_readout = grad_readout.contiguous()
        # Δ_p = Σ_c dO[c, p] · O[c, p]: written by the dQ kernel, read by the dK/dV kernel
        delta = torch.empty_like(lse)
        grad_query = torch.empty_like(query_key)
        grad_key = torch.empty_like(memory_key)
        grad_value = torch.empty_like(memory_value)
        _window_read_bwd_dq_kernel[_grid(batch, pixels, 1)](
            query_key,
            memory_key,
            memory_value,
            grad_readout,
            lse,
            delta,
            grad_query,
            **common,
        )
        _window_read_bwd_dkdv_kernel[_grid(batch, pixels, memory_value.shape[1])](
            query_key,
            memory_key,
            memory_value,
            grad_readout,
            lse,
            delta,
            grad_key,
            grad_value,
            **common,
        )
        return grad_query, grad_key, grad_value, None, None, None


_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _check_inputs(
    query_key: Tensor, memory_key: Tensor, memory_value: Tensor, radius: int, similarity: str
) -> None:
    names = ("query_key", "memory_key", "memory_value")
    tensors = (query_key, memory_key, memory_value)
    for name, tensor in zip(names, tensors):
        if tensor.dim() != 4:
            raise ValueError(
                f"window_read (triton): {name} must be [B, C, H, W], got {tuple(tensor.shape)}"
            )
        if tensor.dtype not in _KERNEL_DTYPES:
            raise ValueError(
                f"window_read (triton): {name} is {tensor.dtype}; the kernel takes "
                "float16, bfloat16 or float32"
            )
    if len({t.dtype for t in tensors}) != 1:
        raise ValueError(
            "window_read (triton): query_key, memory_key and memory_value must share a dtype, "
            f"got {[t.dtype for t in tensors]}"
        )
    if len({t.device for t in tensors}) != 1:
        raise ValueError(
            f"window_read (triton): tensors on different devices {[t.device for t in tensors]}"
        )
    if query_key.shape != memory_key.shape:
        raise ValueError(
            f"window_read (triton): query_key {tuple(query_key.shape)} and memory_key "
            f"{tuple(memory_key.shape)} must have the same shape"
        )
    batch, _, height, width = query_key.shape
    if (memory_value.shape[0], *memory_value.shape[2:]) != (batch, height, width):
        raise ValueError(
            f"window_read (triton): memory_value {tuple(memory_value.shape)} must be "
            f"[B, Cv, H, W] with B, H, W = {(batch, height, width)}"
        )
    if min(query_key.shape) == 0 or memory_value.shape[1] == 0:
        raise ValueError(f"window_read (triton): empty tensor, keys {tuple(query_key.shape)}")
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ValueError(f"window_read (triton): radius must be an int >= 0, got {radius!r}")
    if similarity not in ("dot", "l2"):
        raise ValueError(f"window_read (triton): unknown similarity {similarity!r}")


def window_read_triton(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    *,
    radius: int,
    similarity: str = "dot",
    scale: float | None = None,
) -> Tensor:
    """``[B, Cv, H, W]`` windowed read by the Triton kernels (differentiable).

    All three inputs share one dtype (fp16, bf16 or fp32) and device; ``scale`` defaults to
    ``1/√Ck``. Callers normally go through :func:`vos.ops.window_read.window_read`.
    """
    _check_inputs(query_key, memory_key, memory_value, radius, similarity)
    if scale is None:
        scale = 1.0 / math.sqrt(query_key.shape[1])
    return WindowReadFunction.apply(
        query_key, memory_key, memory_value, radius, similarity, float(scale)
    )
