"""Triton kernels of the windowed memory read (`vos.ops.window_read`), forward and backward.

Same math and names as the reference in ``vos/ops/window_read.py``: query pixel p = (y, x)
reads the memory pixels q = p + (dy, dx), |dy| ≤ ry, |dx| ≤ rx, inside the frame, with

    S[p, q] = q_p · k_q · scale   ("dot")   or   (2 q_p · k_q − ‖k_q‖²) · scale   ("l2")
    P[p, q] = softmax over the window of S                                   (LMRC Eq. 4)
    O[:, p] = Σ_q P[p, q] · v_q                                               (LMRC Eq. 5)

and, when asked (LMRC's comparator, HMMN's local tracking), the k largest S[p, ·] of each
window with their offsets, and the offset of the first largest in raster order.

**Layout: pixel-major.** The kernels take ``[B, H·W, C]`` tensors (channels last, what a
``channels_last`` ``[B, C, H, W]`` tensor is in memory), so the memory pixels at offset
(dy, dx) of a block of BLOCK_M consecutive query pixels are the BLOCK_M consecutive rows that
start ``dy·W + dx`` further: one contiguous ``BLOCK_M × C`` stretch of memory, loaded as whole
vectors (and, pipelined, as asynchronous copies) with one border mask per row. The channel
axis needs no mask when the block covers the channels exactly (``EVEN_*`` below), which keeps
the loads vectorised. Channel-major ``[B, C, H·W]`` (the previous layout) gave one address
per element and a channel-strided gather per offset: 245–255 registers and spills in every
config on sm_80/sm_90.

**Forward** (one program per batch, block of BLOCK_M query pixels, block of BLOCK_CV value
channels): one loop over the (2ry+1)(2rx+1) window offsets in raster order with an online
softmax (running max and sum, rescaling the accumulator), never holding more than one
offset's logits. It stores the log-sum-exp per query pixel for the backward. With
``TOP_K > 0`` it also keeps, per query pixel, a running top-k of the logits (k slots of a
BLOCK_TOP-wide register tile: a new logit replaces the smallest slot when larger) with the
offsets they came from, and the first offset of the largest logit; the slots are written
unsorted (the wrapper sorts k values per pixel).

**Backward**, with dO = ∂L/∂O, Δ_p = Σ_q P[p, q] · dP[p, q] and G[p, q] = ∂L/∂S[p, q] from the
top-k outputs (the upstream gradient of the slot that holds S[p, q], else 0):

    P[p, q]  = exp(S[p, q] − lse_p)                                           (recomputed)
    dP[p, q] = dO_p · v_q ,   dS[p, q] = P[p, q] · (dP[p, q] − Δ_p) + G[p, q]
    dQ_p = Σ_q dS[p, q] · ∂S/∂q_p ,  dK_q = Σ_p dS[p, q] · ∂S/∂k_q ,  dV_q = Σ_p P[p, q] · dO_p

with ∂S/∂q_p = scale·k_q, ∂S/∂k_q = scale·q_p ("dot") and 2·scale·k_q, 2·scale·(q_p − k_q)
("l2"). dQ is a query-side loop over the window, like the forward; it also computes Δ from
the fp32 probabilities (not from the readout rounded to fp16) and stores it. dK and dV come
from the **memory side** rather than from atomic adds: the query pixels whose window holds
memory pixel q are exactly q − (dy, dx) over the same offsets, so one program per block of
memory pixels gathers its partners and writes its gradient once (deterministic, no zeroing).
dV (one program per value block) and dK (which needs dP over every value channel) are two
launches of one kernel with compile-time switches, so neither loop carries a branch.

Inputs may be fp16, bf16 or fp32; every load is cast to fp32 (the interpreter computes bf16
wrongly, and logits need fp32 anyway), accumulation is fp32, outputs are in the input dtype.
There is no ``tl.dot``: a window's logits are the diagonal band of Q·Kᵀ, not a matrix
product (a dense tile product masked to the window would compute (BLOCK_M + 2r)/(2r + 1)
times the pairs).
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor
from vos.kernels.contracts import WINDOW_READ_MAX_TOP_K

# the largest k of the in-kernel top-k
MAX_TOP_K = WINDOW_READ_MAX_TOP_K

# Elements of one [BLOCK_M, channels] fp32 tile per thread that a config may hold. A loop holds
# up to three such tiles (dK: the memory key, its gradient, the partner queries) plus the value
# chunks of dP and the 64-bit addresses; at 32 per tile dK spilled on sm_90, at 16 none does.
MAX_TILE_ELEMENTS_PER_THREAD = 16


def _interpreting() -> bool:
    # read at call time: tests switch the interpreter on before importing triton's runtime
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _configs(value_blocks: bool) -> list[triton.Config]:
    """Block sizes to tune on a GPU; one config under the interpreter (it cannot autotune).

    ``value_blocks``: the kernel's grid splits the value channels (the forward and dV), so
    BLOCK_CV is the width of a program's accumulator; otherwise it is only the chunk width of
    dP's loop over the value channels.
    """
    if _interpreting():
        # small blocks so the tests' tiny grids still span several blocks and partial blocks
        return [
            triton.Config({"BLOCK_M": 32, "BLOCK_CV": 16, "STAGES": 1}, num_warps=1, num_stages=1)
        ]
    # (BLOCK_M, BLOCK_CV, warps): at Ck = 64, 16 tile elements per thread or fewer
    shapes = [(16, 64, 2), (32, 64, 4), (64, 64, 8), (16, 128, 4), (32, 128, 8)]
    if not value_blocks:
        # (64, 32, 8) left out: with 3 stages it spilled on sm_80 (fp16, bf16)
        shapes = [(16, 32, 2), (32, 32, 4), (16, 64, 2), (32, 64, 4)]
    return [
        # STAGES: the loops' own num_stages (Triton pipelines a loop without tl.dot only when
        # the loop names its stages)
        triton.Config(
            {"BLOCK_M": m, "BLOCK_CV": cv, "STAGES": stages}, num_warps=warps, num_stages=stages
        )
        for m, cv, warps in shapes
        for stages in (2, 3)
    ]


def _tile_elements_per_thread(config: triton.Config, channels: int) -> float:
    block_c = max(16, triton.next_power_of_2(channels))
    return config.kwargs["BLOCK_M"] * block_c / (32 * config.num_warps)


def _prune_configs(configs, named_args, **kwargs):
    """Configs whose [BLOCK_M, key channels] and [BLOCK_M, BLOCK_CV] tiles fit in registers
    (keeping the lightest if none does), and no value block wider than the value channels."""
    if _interpreting():
        return configs
    sizes = {**named_args, **kwargs}  # sizes may come positionally or by name
    key_channels, value_channels = sizes["key_channels"], sizes["value_channels"]
    needed = max(16, triton.next_power_of_2(value_channels))
    narrow = [c for c in configs if c.kwargs["BLOCK_CV"] <= needed] or configs

    def load(config):
        return max(
            _tile_elements_per_thread(config, key_channels),
            _tile_elements_per_thread(config, config.kwargs["BLOCK_CV"]),
        )

    if sizes.get("COMPUTE_DK"):
        # dK's BLOCK_CV is only the chunk of dP's loop over the value channels: 128-wide chunks
        # double the chunk tiles for no reuse (and spilled on sm_90 with 3 stages)
        narrow = [c for c in narrow if c.kwargs["BLOCK_CV"] <= 64] or narrow
    fitting = [c for c in narrow if load(c) <= MAX_TILE_ELEMENTS_PER_THREAD]
    if fitting:
        return fitting
    lightest = min(load(c) for c in narrow)
    return [c for c in narrow if load(c) == lightest]


# Autotuning keys: the pixel count in powers of two (a new frame size near an old one keeps
# its tuning), the batch, channel counts, radii and the compile-time variants.
_TUNING_KEY = ["M_BUCKET", "B_BUCKET", "key_channels", "value_channels", "radius_y",
               "radius_x", "SIMILARITY_L2", "TOP_K"]  # fmt: skip
_EVEN = {
    "EVEN_C": lambda args: args["key_channels"] == args["BLOCK_C"],
    "EVEN_CV": lambda args: args["value_channels"] % args["BLOCK_CV"] == 0,
}


def _autotune(value_blocks: bool, extra_key: tuple[str, ...] = ()):
    return triton.autotune(
        configs=_configs(value_blocks),
        key=[*_TUNING_KEY, *extra_key],
        prune_configs_by={"early_config_prune": _prune_configs},
    )


# -- helpers ----------------------------------------------------------------------------------


@triton.jit
def _load_rows(ptr, base, rows, row_ok, offs_c, channels, EVEN: tl.constexpr):
    # the [rows, channels] tile of a pixel-major [B, M, C] tensor in fp32; rows outside the
    # frame load as zeros
    pointers = ptr + base + rows[:, None] * channels + offs_c[None, :]
    if EVEN:
        tile = tl.load(pointers, mask=row_ok[:, None], other=0.0)
    else:
        tile = tl.load(pointers, mask=row_ok[:, None] & (offs_c < channels)[None, :], other=0.0)
    return tile.to(tl.float32)


@triton.jit
def _store_rows(ptr, base, rows, row_ok, offs_c, channels, tile, EVEN: tl.constexpr):
    pointers = ptr + base + rows[:, None] * channels + offs_c[None, :]
    tile = tile.to(ptr.dtype.element_ty)
    if EVEN:
        tl.store(pointers, tile, mask=row_ok[:, None])
    else:
        tl.store(pointers, tile, mask=row_ok[:, None] & (offs_c < channels)[None, :])


@triton.jit
def _pixel_block(M, width, BLOCK_M: tl.constexpr):
    # this program's block of pixels (grid axis 1), which are in the frame, and their (y, x)
    offs = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    return offs, offs < M, offs // width, offs % width


@triton.jit
def _offset(o, radius_y, radius_x):
    # window offset index o (raster order, as the reference's unfold) -> (dy, dx)
    window_width = 2 * radius_x + 1
    return o // window_width - radius_y, o % window_width - radius_x


@triton.jit
def _shift(offs, y, x, in_frame, dy, dx, height, width):
    # the pixels at offset (dy, dx) in the flattened index, and whether they are in the frame
    inside = in_frame & (y + dy >= 0) & (y + dy < height) & (x + dx >= 0) & (x + dx < width)
    return offs + dy * width + dx, inside


@triton.jit
def _window_logits(query, key, scale, SIMILARITY_L2: tl.constexpr):
    # Eq. 4: the logit of one window offset, q_p·k_q·scale or (2 q_p·k_q − ‖k_q‖²)·scale
    if SIMILARITY_L2:
        return tl.sum(query * (2.0 * key) - key * key, axis=1) * scale
    return tl.sum(query * key, axis=1) * scale


@triton.jit
def _grad_probs(
    grad_readout_ptr, memory_value_ptr, value_base, query_rows, query_ok, memory_rows, memory_ok,
    value_channels, BLOCK_M: tl.constexpr, BLOCK_CV: tl.constexpr, EVEN_CV: tl.constexpr,
    STAGES: tl.constexpr,
):  # fmt: skip
    # dP[p, q] = dO_p · v_q over all value channels, for the pairs (query_rows, memory_rows)
    grad_probs = tl.zeros([BLOCK_M], tl.float32)
    for cv0 in tl.range(0, value_channels, BLOCK_CV, num_stages=STAGES):
        offs_cv = cv0 + tl.arange(0, BLOCK_CV)
        grad_out = _load_rows(grad_readout_ptr, value_base, query_rows, query_ok, offs_cv,
                              value_channels, EVEN_CV)  # fmt: skip
        value = _load_rows(memory_value_ptr, value_base, memory_rows, memory_ok, offs_cv,
                           value_channels, EVEN_CV)  # fmt: skip
        grad_probs += tl.sum(grad_out * value, axis=1)
    return grad_probs


@triton.jit
def _top_grad(top_offset, top_grad, o):
    # G[p, q] for offset o: the upstream gradient of the slot holding o's logit (0 if none)
    return tl.sum(tl.where(top_offset == o, top_grad, 0.0), axis=1)


@triton.jit
def _load_top(top_offset_ptr, top_grad_ptr, rows, row_ok, batch, M, TOP_K: tl.constexpr,
              BLOCK_TOP: tl.constexpr):  # fmt: skip
    # the top-k slots' offsets (-1: empty) and upstream gradients of a block of query pixels
    slots = tl.arange(0, BLOCK_TOP)
    ok = row_ok[:, None] & (slots < TOP_K)[None, :]
    index = batch * M * TOP_K + rows[:, None] * TOP_K + slots[None, :]
    offsets = tl.load(top_offset_ptr + index, mask=ok, other=-1)
    grads = tl.load(top_grad_ptr + index, mask=ok, other=0.0).to(tl.float32)
    return offsets, grads


# -- forward ----------------------------------------------------------------------------------


@_autotune(value_blocks=True)
@triton.heuristics(_EVEN)
@triton.jit
def _window_read_fwd_kernel(
    query_key_ptr,  # [B, M, Ck]
    memory_key_ptr,  # [B, M, Ck]
    memory_value_ptr,  # [B, M, Cv]
    readout_ptr,  # [B, M, Cv]
    lse_ptr,  # [B, M] fp32
    top_value_ptr,  # [B, M, TOP_K] fp32, unsorted slots (TOP_K > 0)
    top_offset_ptr,  # [B, M, TOP_K] int32 window offset index of each slot, -1 if empty
    best_offset_ptr,  # [B, M] int32 first offset of the largest logit
    height,
    width,
    M,
    key_channels,
    value_channels,
    radius_y,
    radius_x,
    scale,
    M_BUCKET,  # noqa: ARG001 (autotuning key only)
    B_BUCKET,  # noqa: ARG001
    SIMILARITY_L2: tl.constexpr,
    TOP_K: tl.constexpr,
    BLOCK_TOP: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_CV: tl.constexpr,
    STAGES: tl.constexpr,
    EVEN_C: tl.constexpr,
    EVEN_CV: tl.constexpr,
):
    batch = tl.program_id(0).to(tl.int64)
    offs_m, query_in_frame, y, x = _pixel_block(M, width, BLOCK_M)
    offs_cv = tl.program_id(2) * BLOCK_CV + tl.arange(0, BLOCK_CV)
    offs_c = tl.arange(0, BLOCK_C)
    key_base = batch * M * key_channels
    value_base = batch * M * value_channels

    query = _load_rows(query_key_ptr, key_base, offs_m, query_in_frame, offs_c, key_channels,
                       EVEN_C)  # fmt: skip
    running_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    running_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_CV], tl.float32)
    if TOP_K > 0:
        slots = tl.arange(0, BLOCK_TOP)
        # slots past k hold +inf, so they are never the smallest and never replaced
        top_value = tl.where(slots < TOP_K, float("-inf"), float("inf"))[None, :] + tl.zeros(
            [BLOCK_M, BLOCK_TOP], tl.float32
        )
        top_offset = tl.full([BLOCK_M, BLOCK_TOP], -1, tl.int32)
        best_value = tl.full([BLOCK_M], float("-inf"), tl.float32)
        best_offset = tl.full([BLOCK_M], -1, tl.int32)
    for o in tl.range(0, (2 * radius_y + 1) * (2 * radius_x + 1), num_stages=STAGES):
        dy, dx = _offset(o, radius_y, radius_x)
        offs_n, inside = _shift(offs_m, y, x, query_in_frame, dy, dx, height, width)
        key = _load_rows(memory_key_ptr, key_base, offs_n, inside, offs_c, key_channels, EVEN_C)
        value = _load_rows(memory_value_ptr, value_base, offs_n, inside, offs_cv,
                           value_channels, EVEN_CV)  # fmt: skip
        # padding is excluded (-inf), not a zero key
        logits = tl.where(inside, _window_logits(query, key, scale, SIMILARITY_L2), float("-inf"))
        # online softmax: rescale what was accumulated under the old running max
        new_max = tl.maximum(running_max, logits)
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)  # nothing seen yet
        rescale = tl.exp(running_max - safe_max)
        weights = tl.exp(logits - safe_max)
        running_sum = running_sum * rescale + weights
        # Eq. 5: weighted sum of the window's values (normalised after the loop)
        acc = acc * rescale[:, None] + weights[:, None] * value
        running_max = new_max
        if TOP_K > 0:
            # the smallest slot (the first of equal ones) gives way to a larger logit; -inf
            # (outside the frame) never enters, so empty slots stay -inf with offset -1
            smallest = tl.min(top_value, axis=1)
            first = tl.min(tl.where(top_value == smallest[:, None], slots[None, :], BLOCK_TOP), 1)
            replace = (slots[None, :] == first[:, None]) & (logits > smallest)[:, None]
            top_value = tl.where(replace, logits[:, None], top_value)
            top_offset = tl.where(replace, o, top_offset)
            # strictly larger: ties keep the first offset in raster order (torch's argmax)
            better = logits > best_value
            best_value = tl.where(better, logits, best_value)
            best_offset = tl.where(better, o, best_offset)

    # every in-frame query holds its own pixel, so running_sum ≥ 1 there
    running_sum = tl.where(query_in_frame, running_sum, 1.0)
    readout = acc / running_sum[:, None]
    _store_rows(readout_ptr, value_base, offs_m, query_in_frame, offs_cv, value_channels, readout,
                EVEN_CV)  # fmt: skip
    if tl.program_id(2) == 0:
        lse = tl.where(query_in_frame, running_max, 0.0) + tl.log(running_sum)
        tl.store(lse_ptr + batch * M + offs_m, lse, mask=query_in_frame)
        if TOP_K > 0:
            index = batch * M * TOP_K + offs_m[:, None] * TOP_K + slots[None, :]
            ok = query_in_frame[:, None] & (slots < TOP_K)[None, :]
            tl.store(top_value_ptr + index, top_value, mask=ok)
            tl.store(top_offset_ptr + index, top_offset, mask=ok)
            tl.store(best_offset_ptr + batch * M + offs_m, best_offset, mask=query_in_frame)


# -- backward ---------------------------------------------------------------------------------


@_autotune(value_blocks=False)
@triton.heuristics(_EVEN)
@triton.jit
def _window_read_bwd_dq_kernel(
    query_key_ptr,  # [B, M, Ck]
    memory_key_ptr,  # [B, M, Ck]
    memory_value_ptr,  # [B, M, Cv]
    grad_readout_ptr,  # [B, M, Cv]
    lse_ptr,  # [B, M] fp32
    top_offset_ptr,  # [B, M, TOP_K] int32 (TOP_K > 0)
    top_grad_ptr,  # [B, M, TOP_K] upstream gradient of the top-k slots
    delta_ptr,  # [B, M] fp32, written here: Σ_q P dP, read by the dK kernel
    grad_query_ptr,  # [B, M, Ck]
    height,
    width,
    M,
    key_channels,
    value_channels,
    radius_y,
    radius_x,
    scale,
    M_BUCKET,  # noqa: ARG001
    B_BUCKET,  # noqa: ARG001
    SIMILARITY_L2: tl.constexpr,
    TOP_K: tl.constexpr,
    BLOCK_TOP: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_CV: tl.constexpr,
    STAGES: tl.constexpr,
    EVEN_C: tl.constexpr,
    EVEN_CV: tl.constexpr,
):
    batch = tl.program_id(0).to(tl.int64)
    offs_m, query_in_frame, y, x = _pixel_block(M, width, BLOCK_M)
    offs_c = tl.arange(0, BLOCK_C)
    key_base = batch * M * key_channels
    value_base = batch * M * value_channels

    query = _load_rows(query_key_ptr, key_base, offs_m, query_in_frame, offs_c, key_channels,
                       EVEN_C)  # fmt: skip
    lse = tl.load(lse_ptr + batch * M + offs_m, mask=query_in_frame, other=0.0)
    if TOP_K > 0:
        top_offset, top_grad = _load_top(top_offset_ptr, top_grad_ptr, offs_m, query_in_frame,
                                         batch, M, TOP_K, BLOCK_TOP)  # fmt: skip

    # dQ_p = Σ_q (P dP + G) k_q − Δ_p Σ_q P k_q, with Δ_p = Σ_q P dP: one pass gives all three
    # sums, and Δ comes from fp32 probabilities instead of the rounded readout
    grad_logits_key = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)  # Σ_q (P dP + G) k_q
    prob_key = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)  # Σ_q P k_q
    delta = tl.zeros([BLOCK_M], tl.float32)  # Σ_q P dP = Σ_c dO · O
    for o in tl.range(0, (2 * radius_y + 1) * (2 * radius_x + 1), num_stages=STAGES):
        dy, dx = _offset(o, radius_y, radius_x)
        offs_n, inside = _shift(offs_m, y, x, query_in_frame, dy, dx, height, width)
        key = _load_rows(memory_key_ptr, key_base, offs_n, inside, offs_c, key_channels, EVEN_C)
        # Eq. 4 recomputed: P = exp(S − lse)
        probs = tl.where(
            inside, tl.exp(_window_logits(query, key, scale, SIMILARITY_L2) - lse), 0.0
        )
        grad_probs = _grad_probs(
            grad_readout_ptr, memory_value_ptr, value_base, offs_m, query_in_frame, offs_n, inside,
            value_channels, BLOCK_M, BLOCK_CV, EVEN_CV, STAGES,
        )  # fmt: skip
        direct = probs * grad_probs
        delta += direct
        if TOP_K > 0:
            direct += _top_grad(top_offset, top_grad, o)
        grad_logits_key += direct[:, None] * key
        prob_key += probs[:, None] * key

    # ∂S/∂q_p (the scale is applied once, here)
    grad_query = grad_logits_key - delta[:, None] * prob_key
    if SIMILARITY_L2:
        grad_query = grad_query * (2.0 * scale)
    else:
        grad_query = grad_query * scale
    tl.store(delta_ptr + batch * M + offs_m, delta, mask=query_in_frame)
    _store_rows(grad_query_ptr, key_base, offs_m, query_in_frame, offs_c, key_channels, grad_query,
                EVEN_C)  # fmt: skip


@_autotune(value_blocks=True, extra_key=("COMPUTE_DK", "COMPUTE_DV"))
@triton.heuristics(_EVEN)
@triton.jit
def _window_read_bwd_memory_kernel(
    query_key_ptr,  # [B, M, Ck]
    memory_key_ptr,  # [B, M, Ck]
    memory_value_ptr,  # [B, M, Cv]
    grad_readout_ptr,  # [B, M, Cv]
    lse_ptr,  # [B, M] fp32
    top_offset_ptr,  # [B, M, TOP_K] int32 (TOP_K > 0)
    top_grad_ptr,  # [B, M, TOP_K]
    delta_ptr,  # [B, M] fp32, from the dQ kernel
    grad_key_ptr,  # [B, M, Ck] (COMPUTE_DK)
    grad_value_ptr,  # [B, M, Cv] (COMPUTE_DV)
    height,
    width,
    M,
    key_channels,
    value_channels,
    radius_y,
    radius_x,
    scale,
    M_BUCKET,  # noqa: ARG001
    B_BUCKET,  # noqa: ARG001
    SIMILARITY_L2: tl.constexpr,
    TOP_K: tl.constexpr,
    BLOCK_TOP: tl.constexpr,
    COMPUTE_DK: tl.constexpr,
    COMPUTE_DV: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_CV: tl.constexpr,
    STAGES: tl.constexpr,
    EVEN_C: tl.constexpr,
    EVEN_CV: tl.constexpr,
):
    # one program per block of MEMORY pixels (offs_n); dV: and one block of value channels
    batch = tl.program_id(0).to(tl.int64)
    offs_n, memory_in_frame, y, x = _pixel_block(M, width, BLOCK_M)
    offs_cv = tl.program_id(2) * BLOCK_CV + tl.arange(0, BLOCK_CV)
    offs_c = tl.arange(0, BLOCK_C)
    key_base = batch * M * key_channels
    value_base = batch * M * value_channels

    key = _load_rows(memory_key_ptr, key_base, offs_n, memory_in_frame, offs_c, key_channels,
                     EVEN_C)  # fmt: skip
    if COMPUTE_DV:
        grad_value = tl.zeros([BLOCK_M, BLOCK_CV], tl.float32)
    if COMPUTE_DK:
        grad_key = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)
        grad_logits_sum = tl.zeros([BLOCK_M], tl.float32)  # Σ_p dS, for l2's −2·scale·k_q
    for o in tl.range(0, (2 * radius_y + 1) * (2 * radius_x + 1), num_stages=STAGES):
        # memory pixel q sits at offset (dy, dx) of query pixel p = q − (dy, dx)
        dy, dx = _offset(o, radius_y, radius_x)
        offs_m, inside = _shift(offs_n, y, x, memory_in_frame, -dy, -dx, height, width)
        query = _load_rows(query_key_ptr, key_base, offs_m, inside, offs_c, key_channels, EVEN_C)
        lse = tl.load(lse_ptr + batch * M + offs_m, mask=inside, other=0.0)
        # Eq. 4 recomputed from the memory side: P[p, q] = exp(S[p, q] − lse_p)
        logits = _window_logits(query, key, scale, SIMILARITY_L2)
        probs = tl.where(inside, tl.exp(logits - lse), 0.0)
        if COMPUTE_DV:
            # dV_q += P[p, q] · dO_p (this program's value channels)
            grad_out = _load_rows(grad_readout_ptr, value_base, offs_m, inside, offs_cv,
                                  value_channels, EVEN_CV)  # fmt: skip
            grad_value += probs[:, None] * grad_out
        if COMPUTE_DK:
            # dP[p, q] = dO_p · v_q over all value channels, then the softmax backward
            grad_probs = _grad_probs(
                grad_readout_ptr, memory_value_ptr, value_base, offs_m, inside, offs_n,
                memory_in_frame, value_channels, BLOCK_M, BLOCK_CV, EVEN_CV, STAGES,
            )  # fmt: skip
            delta = tl.load(delta_ptr + batch * M + offs_m, mask=inside, other=0.0)
            grad_logits = probs * (grad_probs - delta)
            if TOP_K > 0:
                top_offset, top_grad = _load_top(top_offset_ptr, top_grad_ptr, offs_m, inside,
                                                 batch, M, TOP_K, BLOCK_TOP)  # fmt: skip
                grad_logits += _top_grad(top_offset, top_grad, o)
            # dK_q += dS[p, q] · q_p (scale and the l2 term applied once, below)
            grad_key += grad_logits[:, None] * query
            grad_logits_sum += grad_logits

    if COMPUTE_DV:
        _store_rows(grad_value_ptr, value_base, offs_n, memory_in_frame, offs_cv, value_channels,
                    grad_value, EVEN_CV)  # fmt: skip
    if COMPUTE_DK:
        if SIMILARITY_L2:
            # ∂S/∂k_q = 2·scale·(q_p − k_q)
            grad_key = (grad_key - grad_logits_sum[:, None] * key) * (2.0 * scale)
        else:
            grad_key = grad_key * scale
        _store_rows(grad_key_ptr, key_base, offs_n, memory_in_frame, offs_c, key_channels,
                    grad_key, EVEN_C)  # fmt: skip


# -- launches ---------------------------------------------------------------------------------


def _grid(batch: int, pixels: int, channels: int | None):
    """(batch, pixel blocks, value blocks); ``channels=None``: one program per pixel block."""

    def grid(meta):
        value_blocks = 1 if channels is None else triton.cdiv(channels, meta["BLOCK_CV"])
        return batch, triton.cdiv(pixels, meta["BLOCK_M"]), value_blocks

    return grid


def _bucket(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def kernel_arguments(
    batch: int,
    key_channels: int,
    value_channels: int,
    height: int,
    width: int,
    radius: int,
    similarity: str,
    scale: float,
    top_k: int,
) -> dict:
    """The size and compile-time arguments every launch of one read shares (``top_k`` 0: none)."""
    return {
        "height": height,
        "width": width,
        "M": height * width,
        "key_channels": key_channels,
        "value_channels": value_channels,
        "radius_y": min(radius, height - 1),
        "radius_x": min(radius, width - 1),
        "scale": scale,
        "M_BUCKET": _bucket(height * width),
        "B_BUCKET": _bucket(batch),
        "SIMILARITY_L2": similarity == "l2",
        "TOP_K": top_k,
        "BLOCK_TOP": max(2, triton.next_power_of_2(max(top_k, 1))),
        "BLOCK_C": max(16, triton.next_power_of_2(key_channels)),
    }


def pixel_major(tensor: Tensor) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, H·W, C]`` contiguous (no copy for a ``channels_last`` tensor)."""
    return tensor.flatten(2).transpose(1, 2).contiguous()


def channel_view(tensor: Tensor, height: int, width: int) -> Tensor:
    """``[B, H·W, C]`` -> the ``[B, C, H, W]`` view of it (``channels_last`` strides)."""
    return tensor.transpose(1, 2).unflatten(2, (height, width))


class WindowReadFunction(torch.autograd.Function):
    """Windowed read with the Triton forward and backward; use :func:`window_read_triton`.

    Returns ``(readout, top_values, top_offsets, best_offsets)``; the last three are empty
    unless ``top_k > 0``. ``top_values`` ``[B, H·W, k]`` fp32 (unsorted slots, ``-inf`` where
    empty) is differentiable; the int32 offset indices are not.
    """

    @staticmethod
    def forward(
        ctx,
        query_key: Tensor,
        memory_key: Tensor,
        memory_value: Tensor,
        radius: int,
        similarity: str,
        scale: float,
        top_k: int,
    ):
        _check_inputs(query_key, memory_key, memory_value, radius, similarity)
        batch, key_channels, height, width = query_key.shape
        value_channels = memory_value.shape[1]
        pixels = height * width
        query, key, value = (pixel_major(t) for t in (query_key, memory_key, memory_value))
        device = query_key.device
        readout = torch.empty_like(value)
        lse = torch.empty(batch, pixels, device=device, dtype=torch.float32)
        slots = (batch, pixels, top_k) if top_k else (0,)
        top_values = torch.empty(slots, device=device, dtype=torch.float32)
        top_offsets = torch.empty(slots, device=device, dtype=torch.int32)
        best_offsets = torch.empty((batch, pixels) if top_k else (0,), device=device,
                                   dtype=torch.int32)  # fmt: skip
        common = kernel_arguments(batch, key_channels, value_channels, height, width, radius,
                                  similarity, scale, top_k)  # fmt: skip
        _window_read_fwd_kernel[_grid(batch, pixels, value_channels)](
            query, key, value, readout, lse, top_values, top_offsets, best_offsets, **common
        )
        ctx.save_for_backward(query, key, value, lse, top_offsets)
        ctx.common = common
        ctx.dtype = query_key.dtype
        ctx.grid_hw = (height, width)
        ctx.mark_non_differentiable(top_offsets, best_offsets)
        return channel_view(readout, height, width), top_values, top_offsets, best_offsets

    @staticmethod
    def backward(ctx, grad_readout: Tensor, grad_top: Tensor | None, *_):
        query, key, value, lse, top_offsets = ctx.saved_tensors
        common = ctx.common
        batch, pixels = lse.shape
        grad_readout = pixel_major(grad_readout.to(ctx.dtype))
        if common["TOP_K"] and grad_top is None:
            grad_top = torch.zeros_like(top_offsets, dtype=torch.float32)
        if grad_top is None:
            grad_top = lse  # unread (TOP_K = 0)
        grad_top = grad_top.contiguous()
        # Δ_p = Σ_q P dP: written by the dQ kernel, read by the dK launch
        delta = torch.empty_like(lse)
        grad_query, grad_key, grad_value = (torch.empty_like(t) for t in (query, key, value))
        tensors = (query, key, value, grad_readout, lse, top_offsets, grad_top, delta)
        _window_read_bwd_dq_kernel[_grid(batch, pixels, None)](*tensors, grad_query, **common)
        _window_read_bwd_memory_kernel[_grid(batch, pixels, None)](
            *tensors, grad_key, grad_value, COMPUTE_DK=True, COMPUTE_DV=False, **common
        )
        _window_read_bwd_memory_kernel[_grid(batch, pixels, value.shape[2])](
            *tensors, grad_key, grad_value, COMPUTE_DK=False, COMPUTE_DV=True, **common
        )
        height, width = ctx.grid_hw
        grads = (channel_view(g, height, width) for g in (grad_query, grad_key, grad_value))
        return (*grads, None, None, None, None)


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
    # offsets inside one batch element are int32 (the batch offset is int64)
    per_batch = height * width * max(query_key.shape[1], memory_value.shape[1])
    if per_batch >= 2**31:
        raise ValueError(
            f"window_read (triton): {per_batch} elements per batch element exceed int32 offsets"
        )
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
    top_k: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Windowed read by the Triton kernels (differentiable).

    All three inputs share one dtype (fp16, bf16 or fp32) and device; ``scale`` defaults to
    ``1/√Ck``. Returns ``(readout [B, Cv, H, W], top_values, top_offsets, best_offsets)`` as
    :class:`WindowReadFunction` does. Callers normally go through
    :func:`vos.ops.window_read.window_read`.
    """
    _check_inputs(query_key, memory_key, memory_value, radius, similarity)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 0 <= top_k <= MAX_TOP_K:
        raise ValueError(f"window_read (triton): top_k must be an int in [0, {MAX_TOP_K}]")
    if scale is None:
        scale = 1.0 / math.sqrt(query_key.shape[1])
    return WindowReadFunction.apply(
        query_key, memory_key, memory_value, radius, similarity, float(scale), top_k
    )
