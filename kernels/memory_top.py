"""The k largest memory logits of every query pixel, and which memory pixels hold them.

``memory_top_triton`` is the kernel of `vos.ops.memory_top` (LMRC's global top-k similarities,
the comparator's global side) and of ``memory_read(..., return_top=k)``: the same logits as
`memory_read`'s kernel (dot or STCN's l2, HMMN's Gaussian, memory and query masks, block
skipping), never the ``[N, M]`` affinity.

Each program holds a block of query pixels and a running top list of ``BLOCK_TOP`` slots per
pixel. A slot is one int64 that packs the logit and its memory index: the fp32 bits mapped to
an integer of the same order (a negative float's magnitude bits flipped) in the high word, the
index complemented in the low word, so that integer order is logit order, ties going to the
smaller index. A memory block's packed logits, sorted ascending, merge into the list sorted
descending by one elementwise maximum (the half-cleaner of a bitonic merge keeps the largest
``BLOCK_TOP`` of the two) and one sort; ``BLOCK_TOP`` is also the memory block width, so a
block adds one merge. The first k slots are unpacked into a logit and an index; slots without
a valid memory pixel hold ``-inf`` and index -1.

No gradient: `vos.ops.memory_top` recomputes the k logits from the returned indices when
autograd needs them (k·Ck products per query pixel, against N·Ck for the search).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from vos.kernels.memory_read import (
    _any_valid,
    _grid_yx,
    _interpreting,
    _Launch,
    _load_tile,
    _load_valid,
    _query_block_logits,
    pad_pixels,
)

# The most slots the kernel keeps (LMRC's k is 25 at every size; STCN's top-k is 20)
MAX_RETURN_TOP = 64
_LOW_WORD = tl.constexpr(0xFFFFFFFF)
_MAGNITUDE = tl.constexpr(0x7FFFFFFF)


# (BLOCK_M, num_warps, num_stages) that spill registers with IEEE fp32 products (FMA units)
# at LMRC's size (`vos.bench kernels --kernels memory_top`: 8-12 bytes on sm_80 or sm_90)
_SPILLED_IEEE = {(32, 4, 2), (64, 8, 2)}


def _configs() -> list[triton.Config]:
    if _interpreting():
        return [triton.Config({"BLOCK_M": 16})]
    # The running list is BLOCK_M × BLOCK_TOP int64 (8 KB at 32 × 32 per program) and every
    # merge sorts it: small query blocks keep it in registers
    return [
        triton.Config({"BLOCK_M": block_m}, num_warps=warps, num_stages=stages)
        for block_m, warps, stages in ((16, 4, 2), (32, 4, 2), (32, 8, 3), (64, 8, 2))
    ]


def _prune_configs(configs, named_args, **kwargs):
    """IEEE fp32 products leave out the configs that spilled (`_SPILLED_IEEE`)."""
    if kwargs.get("DOT_PRECISION") != "ieee" or not kwargs.get("DOT_FP32"):
        return configs
    shape = lambda c: (c.kwargs["BLOCK_M"], c.num_warps, c.num_stages)  # noqa: E731
    return [c for c in configs if shape(c) not in _SPILLED_IEEE] or configs


@triton.jit
def _pack(logits, offs_n):
    # logit -> an int32 of the same order (flip a negative float's magnitude bits), high word;
    # the complemented index, low word: larger packed = larger logit, then smaller index
    bits = logits.to(tl.int32, bitcast=True)
    ordered = bits ^ ((bits >> 31) & _MAGNITUDE)
    return (ordered.to(tl.int64) << 32) | (_LOW_WORD - offs_n.to(tl.int64))


@triton.jit
def _unpack(packed):
    ordered = (packed >> 32).to(tl.int32)
    bits = ordered ^ ((ordered >> 31) & _MAGNITUDE)
    return bits.to(tl.float32, bitcast=True), _LOW_WORD - (packed & _LOW_WORD)


@triton.jit
def _top_block(
    best,
    query,
    query_y,
    query_x,
    memory_key_ptr,
    centers_ptr,
    sigma_ptr,
    b,
    scale,
    CK,
    N,
    offs_ck,
    in_ck,
    offs_n,
    memory_valid,
    SIMILARITY_L2: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
    HAS_GAUSSIAN: tl.constexpr,
    DOT_FP32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    _, logits = _query_block_logits(
        query, query_y, query_x, memory_key_ptr, centers_ptr, sigma_ptr, b, scale, CK, N,
        offs_ck, in_ck, offs_n, memory_valid, SIMILARITY_L2, HAS_GAUSSIAN, DOT_FP32,
        DOT_PRECISION, HAS_MEMORY_MASK,
    )  # fmt: skip
    logits = tl.where(memory_valid[None, :], logits, float("-inf"))
    block = tl.sort(_pack(logits, offs_n[None, :]), dim=1)  # ascending
    return tl.sort(tl.maximum(best, block), dim=1, descending=True)


@triton.jit
def _top_loop(
    best,
    query_key_ptr,
    memory_key_ptr,
    memory_mask_ptr,
    centers_ptr,
    sigma_ptr,
    b,
    scale,
    CK,
    N,
    M,
    GRID_W,
    offs_m,
    query_valid,
    offs_ck,
    in_ck,
    SIMILARITY_L2: tl.constexpr,
    HAS_QUERY_MASK: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
    HAS_GAUSSIAN: tl.constexpr,
    DOT_FP32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_TOP: tl.constexpr,
):
    query = _load_tile(
        query_key_ptr, b, CK, M, offs_ck, in_ck, offs_m, query_valid, True, DOT_FP32, HAS_QUERY_MASK
    )  # [BLOCK_M, BLOCK_CK]
    query_y, query_x = _grid_yx(offs_m, GRID_W)
    for start_n in range(0, N, BLOCK_TOP):
        offs_n = start_n + tl.arange(0, BLOCK_TOP)
        memory_valid = _load_valid(memory_mask_ptr, b, N, offs_n, HAS_MEMORY_MASK)
        if HAS_MEMORY_MASK:
            if _any_valid(memory_valid):  # block skipping, as memory_read's
                best = _top_block(
                    best, query, query_y, query_x, memory_key_ptr, centers_ptr, sigma_ptr, b,
                    scale, CK, N, offs_ck, in_ck, offs_n, memory_valid, SIMILARITY_L2,
                    HAS_MEMORY_MASK, HAS_GAUSSIAN, DOT_FP32, DOT_PRECISION,
                )  # fmt: skip
        else:
            best = _top_block(
                best, query, query_y, query_x, memory_key_ptr, centers_ptr, sigma_ptr, b, scale,
                CK, N, offs_ck, in_ck, offs_n, memory_valid, SIMILARITY_L2, HAS_MEMORY_MASK,
                HAS_GAUSSIAN, DOT_FP32, DOT_PRECISION,
            )  # fmt: skip
    return best


@triton.autotune(
    configs=_configs(),
    key=["CK", "N_BUCKET", "M_BUCKET", "B_BUCKET", "BLOCK_TOP", "DOT_PRECISION", "DOT_FP32"],
    prune_configs_by={"early_config_prune": _prune_configs},
)
@triton.jit
def _memory_top_kernel(
    query_key_ptr,  # [B, Ck, M], padded rows
    memory_key_ptr,  # [B, Ck, N], padded rows
    query_mask_ptr,  # [B, M] uint8
    memory_mask_ptr,  # [B, N] uint8
    centers_ptr,  # [B, N, 2] fp32
    sigma_ptr,  # [B, N] fp32
    top_value_ptr,  # [B, M, K] fp32
    top_index_ptr,  # [B, M, K] int64
    scale,
    CK,
    N,
    M,
    GRID_W,
    K,
    N_BUCKET,
    M_BUCKET,
    B_BUCKET,
    SIMILARITY_L2: tl.constexpr,
    HAS_QUERY_MASK: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
    HAS_GAUSSIAN: tl.constexpr,
    DOT_FP32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_CK: tl.constexpr,
    BLOCK_TOP: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    b = tl.program_id(1).to(tl.int64)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_ck = tl.arange(0, BLOCK_CK)
    in_ck = offs_ck < CK
    query_valid = _load_valid(query_mask_ptr, b, M, offs_m, HAS_QUERY_MASK)
    empty = _pack(tl.full([BLOCK_M, BLOCK_TOP], float("-inf"), tl.float32), 0 * offs_m[:, None])
    best = empty
    if HAS_QUERY_MASK:
        if _any_valid(query_valid):  # a block of masked-out queries computes nothing
            best = _top_loop(
                best, query_key_ptr, memory_key_ptr, memory_mask_ptr, centers_ptr, sigma_ptr, b,
                scale, CK, N, M, GRID_W, offs_m, query_valid, offs_ck, in_ck, SIMILARITY_L2,
                HAS_QUERY_MASK, HAS_MEMORY_MASK, HAS_GAUSSIAN, DOT_FP32, DOT_PRECISION, BLOCK_TOP,
            )  # fmt: skip
    else:
        best = _top_loop(
            best, query_key_ptr, memory_key_ptr, memory_mask_ptr, centers_ptr, sigma_ptr, b,
            scale, CK, N, M, GRID_W, offs_m, query_valid, offs_ck, in_ck, SIMILARITY_L2,
            HAS_QUERY_MASK, HAS_MEMORY_MASK, HAS_GAUSSIAN, DOT_FP32, DOT_PRECISION, BLOCK_TOP,
        )  # fmt: skip
    value, index = _unpack(best)
    held = (value != float("-inf")) & query_valid[:, None]
    slots = tl.arange(0, BLOCK_TOP)
    offsets = (b * M + offs_m[:, None]) * K + slots[None, :]
    store = (offs_m[:, None] < M) & (slots[None, :] < K)
    tl.store(top_value_ptr + offsets, tl.where(held, value, float("-inf")), mask=store)
    tl.store(top_index_ptr + offsets, tl.where(held, index, -1), mask=store)


def block_top(k: int) -> int:
    """Slots of the running list (and memory block width) for ``k``: a power of two >= 16."""
    return max(16, triton.next_power_of_2(k))


def memory_top_triton(
    query_key: Tensor,
    memory_key: Tensor,
    k: int,
    *,
    similarity: str = "dot",
    scale: float | None = None,
    query_mask: Tensor | None = None,
    memory_mask: Tensor | None = None,
    gaussian_centers: Tensor | None = None,
    gaussian_sigma: Tensor | None = None,
    query_hw: tuple[int, int] | None = None,
    tf32: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """``(values [B, M, k] fp32, indices [B, M, k] int64)``, best first; no autograd."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_RETURN_TOP:
        raise ValueError(f"memory_top (triton): k must be an int in [1, {MAX_RETURN_TOP}], got {k}")
    batch, channels, queries = query_key.shape
    scale = channels**-0.5 if scale is None else float(scale)
    query_key = pad_pixels(query_key.detach())
    memory_key = pad_pixels(memory_key.detach())
    # the sizes and switches memory_read's kernels use; the keys stand in for the values
    launch = _Launch(
        query_key, memory_key, memory_key, query_mask, memory_mask, gaussian_centers,
        gaussian_sigma, query_hw, similarity, scale, tf32,
    )  # fmt: skip
    constants = dict(launch.constants)
    values = torch.empty(batch, queries, k, device=query_key.device, dtype=torch.float32)
    indices = torch.empty(batch, queries, k, device=query_key.device, dtype=torch.int64)
    sizes = launch.sizes()  # (scale, CK, CV, N, M, GRID_W, N_BUCKET, M_BUCKET, B_BUCKET)

    def grid(meta):
        return (triton.cdiv(queries, meta["BLOCK_M"]), batch)

    _memory_top_kernel[grid](
        query_key, memory_key, launch.query_mask, launch.memory_mask, launch.centers,
        launch.sigma, values, indices, sizes[0], sizes[1], sizes[3], sizes[4], sizes[5], k,
        *sizes[6:], BLOCK_TOP=block_top(k), **constants,
    )  # fmt: skip
    return values, indices
