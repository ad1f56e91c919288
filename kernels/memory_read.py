"""Triton kernels of `vos.ops.memory_read`: a flash-attention style read, forward and backward.

Shapes (docs/architecture.md): ``query_key [B, Ck, M]``, ``memory_key [B, Ck, N]``,
``memory_value [B, Cv, N]`` -> ``readout [B, Cv, M]``; masks ``[B, M]`` / ``[B, N]`` bool;
the HMMN Gaussian as ``gaussian_centers [B, N, 2]`` (y, x) and ``gaussian_sigma [B, N]`` in
cells of the ``query_hw = (H, W)`` grid. The math is the reference's (`vos.ops.memory_read`):

    S[n, m] = scale · k_n·q_m              (dot)   or   scale · (2 k_n·q_m − ‖k_n‖²)   (l2)
            − ((y_m − cy_n)² + (x_m − cx_n)²) / (2 σ_n²)     (HMMN's log-Gaussian, optional)
            = −∞ where memory_mask[n] is False               (RMNet Eq. 7)
    readout[:, m] = Σ_n softmax_n(S[:, m]) · v_n,  0 where query_mask[m] is False

Forward: one program per (query block, value-channel block, batch element). It loops over
blocks of memory pixels with an online softmax (running max, running sum, fp32 accumulator),
so the N×M affinity never exists in memory, and stores the per-query logsumexp for backward.

Block skipping (RMNet's regional read): a program first loads its query block's mask and, if
no query pixel in it is valid, loads nothing else and writes zeros. For every memory block it
loads the block's slice of the memory mask (BLOCK_N bytes) and reduces it to "any valid"
before anything else; a block with no valid pixel is skipped entirely — its keys, values and
Gaussian parameters are never loaded and no dot product is issued. A box covering 20% of the
memory and of the query thus costs about 4% of the global read, not 100% computed and
discarded. (The "any valid" flag is reduced in the kernel from the mask slice rather than
precomputed on the host, so that it follows whatever block size autotuning picks and costs no
extra launch; the mask slice is needed anyway for partially valid blocks.) Masked pixels in a
partially valid block are loaded as zeros (masked loads), so a NaN outside the mask never
reaches the output.

Backward (flash-attention 2, without atomics, deterministic): with the stored logsumexp L_m,
P[n, m] = exp(S[n, m] − L_m) is recomputed block by block with the same skipping, masks and
Gaussian, and with dO the readout's gradient (0 at masked queries) and Δ_m = Σ_c dO[c, m]·O[c, m]:

    dV[:, n] = Σ_m P[n, m] dO[:, m]
    dP[n, m] = v_n · dO[:, m]
    dS[n, m] = P[n, m] (dP[n, m] − Δ_m)                                (softmax backward)
    dot: dQ[:, m] = scale Σ_n dS k_n        dK[:, n] = scale Σ_m dS q_m
    l2:  dQ[:, m] = 2 scale Σ_n dS k_n      dK[:, n] = 2 scale (Σ_m dS q_m − k_n Σ_m dS)

One kernel runs over memory blocks and accumulates dK and dV in registers, another over query
blocks accumulates dQ; P is recomputed in each (the price of having no atomics). When Cv is
wider than one value block (BACKWARD_BLOCK_CV), dV is computed by programs split over
value-channel blocks and dK by one program per memory block that loops over the value channels
for dP. The forward splits Cv over programs too (BLOCK_CV is autotuned: wider blocks recompute
the logits fewer times, narrower ones keep the accumulator in registers). The Gaussian
centres and sigmas get no gradient: HMMN's tracked positions are not learned.

Precision: logits, softmax statistics and accumulators are fp32; fp16/bf16 tiles go to the
tensor cores as such (P and dS are rounded to the input dtype before their products, as in
flash-attention), fp32 tiles use IEEE fp32 products. The forward writes an fp32 readout,
returned in the input dtype and kept in fp32 for backward's Δ. Triton's interpreter computes
bf16 dot products wrongly and truncates fp32 -> bf16 on store, so under it bf16 tiles are
computed in fp32 and the gradients stored in fp32, then rounded on the host.

Validation: the tests run every kernel under the interpreter against the reference; every
variant (dtypes, dot/l2, masks, Gaussian, dK/dV passes) and every autotuning config was also
compiled ahead of time for sm_90 (Ck = 128, no or few register spills by ptxas -v), but the
kernels have not been timed on a GPU here. A known limit: the per-block "any valid" branch
inside the memory loop may keep Triton from software-pipelining the loads (num_stages);
a host-side compacted list of live blocks would avoid it at the cost of fixing BLOCK_N.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

# Under the interpreter: one config (autotuning needs a GPU driver) with the smallest blocks,
# so tiny test shapes still span several blocks. Tests use these to build block-aligned masks.
INTERPRETER_BLOCK_M = 16
INTERPRETER_BLOCK_N = 16
INTERPRETER_BLOCK_CV = 16  # small, so tests with Cv > 16 cover the split over value blocks
# Backward's value-channel block on a GPU (chosen on the host: it decides the dK/dV passes).
BACKWARD_BLOCK_CV = 64


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _forward_configs() -> list[triton.Config]:
    if _interpreting():
        return [
            triton.Config(
                {
                    "BLOCK_M": INTERPRETER_BLOCK_M,
                    "BLOCK_N": INTERPRETER_BLOCK_N,
                    "BLOCK_CV": INTERPRETER_BLOCK_CV,
                }
            )
        ]
    # Chosen so that Ck = 128 with the Gaussian and masks compiles for sm_90 with no or few
    # register spills (checked with ptxas -v); BLOCK_CV = 128 halves the logits recomputed
    # per value-channel block for Cv = 512, BLOCK_CV = 64 spills less.
    return [
        triton.Config(
            {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_CV": block_cv},
            num_warps=warps,
            num_stages=stages,
        )
        for block_m, block_n, block_cv, warps, stages in (
            (128, 32, 128, 8, 2),
            (128, 32, 128, 8, 3),
            (128, 64, 64, 8, 2),
            (128, 64, 64, 8, 3),
            (128, 32, 64, 8, 3),
            (64, 32, 64, 4, 2),
            (64, 64, 32, 4, 2),
            (64, 32, 16, 4, 2),
        )
    ]


def _prune_forward_configs(configs, named_args, **kwargs):
    """Drop value-channel blocks wider than Cv needs (keep the narrowest if none fits)."""
    needed = max(16, triton.next_power_of_2(named_args["CV"]))
    fitting = [c for c in configs if c.kwargs["BLOCK_CV"] <= needed]
    if not fitting:
        narrowest = min(c.kwargs["BLOCK_CV"] for c in configs)
        fitting = [c for c in configs if c.kwargs["BLOCK_CV"] == narrowest]
    return fitting


def _backward_configs() -> list[triton.Config]:
    # 8 warps: with Ck = 128 the dK/dV kernel holds k, dK and dV tiles and spills with fewer
    if _interpreting():
        return [triton.Config({"BLOCK_M": INTERPRETER_BLOCK_M, "BLOCK_N": INTERPRETER_BLOCK_N})]
    return [
        triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps, num_stages=stages)
        for block_m, block_n, warps, stages in (
            (32, 64, 8, 2),
            (64, 32, 8, 2),
            (32, 64, 8, 3),
            (64, 32, 8, 3),
            (32, 32, 4, 2),
        )
    ]


# Autotuning keys: size buckets (powers of two), so a memory that grows by one frame does not
# trigger a new tuning run, the channel counts, and the compile-time variants.
_TUNING_KEY = ["N_BUCKET", "M_BUCKET", "CK", "CV", "SIMILARITY_L2", "HAS_GAUSSIAN"]


@triton.jit
def _scaled_logits(dot, memory_norm, scale, SIMILARITY_L2: tl.constexpr):
    # dot: S = scale·k·q ; l2 (STCN): S = scale·(2 k·q − ‖k‖²), ‖q‖² dropped (constant over n)
    if SIMILARITY_L2:
        return (2.0 * dot - memory_norm) * scale
    return dot * scale


@triton.jit
def _log_gaussian(query_y, query_x, center_y, center_x, sigma):
    # HMMN §3.1: log G = −((y_m − cy_n)² + (x_m − cx_n)²) / (2 σ_n²); arguments broadcast
    dy = query_y - center_y
    dx = query_x - center_x
    return -(dy * dy + dx * dx) / (2.0 * sigma * sigma)


@triton.jit
def _grid_yx(offs_m, GRID_W):
    # query pixel m's (y, x) cell in the query_hw grid, for the Gaussian
    return (offs_m // GRID_W).to(tl.float32), (offs_m % GRID_W).to(tl.float32)


@triton.jit
def _load_valid(mask_ptr, b, P, offs_p, HAS_MASK: tl.constexpr):
    # pixels in range and, with a mask, True in it (the mask slice is BLOCK bytes)
    valid = offs_p < P
    if HAS_MASK:
        valid = tl.load(mask_ptr + b * P + offs_p, mask=offs_p < P, other=0) != 0
    return valid


@triton.jit
def _any_valid(valid):
    # block skipping: a block with no valid pixel is never loaded nor computed
    return tl.max(valid.to(tl.int32), axis=0) > 0


@triton.jit
def _load_tile(
    ptr,
    b,
    C,
    P,
    offs_c,
    in_c,
    offs_p,
    valid_p,
    PIXEL_ROWS: tl.constexpr,
    DOT_FP32: tl.constexpr,
):
    # a tile of a [B, C, P] tensor: [channels, pixels], or [pixels, channels] with PIXEL_ROWS;
    # masked pixels and channels load as zeros, so a NaN outside a mask never reaches a product
    base = ptr + b * C * P
    if PIXEL_ROWS:
        tile = tl.load(
            base + offs_c[None, :] * P + offs_p[:, None],
            mask=valid_p[:, None] & in_c[None, :],
            other=0.0,
        )
    else:
        tile = tl.load(
            base + offs_c[:, None] * P + offs_p[None, :],
            mask=in_c[:, None] & valid_p[None, :],
            other=0.0,
        )
    if DOT_FP32:
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def _load_gaussian(centers_ptr, sigma_ptr, b, N, offs_n, memory_valid):
    # HMMN's Gaussian parameters of a memory block: centre (cy_n, cx_n) and σ_n
    center_y = tl.load(centers_ptr + (b * N + offs_n) * 2, mask=memory_valid, other=0.0)
    center_x = tl.load(centers_ptr + (b * N + offs_n) * 2 + 1, mask=memory_valid, other=0.0)
    sigma = tl.load(sigma_ptr + b * N + offs_n, mask=memory_valid, other=1.0)
    return center_y, center_x, sigma


@triton.jit
def _query_block_logits(
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
    HAS_GAUSSIAN: tl.constexpr,
    DOT_FP32: tl.constexpr,
):
    # a query block's logits S [BLOCK_M, BLOCK_N] against one memory block (not yet masked),
    # and the block's keys [BLOCK_CK, BLOCK_N]
    key = _load_tile(
        memory_key_ptr, b, CK, N, offs_ck, in_ck, offs_n, memory_valid, False, DOT_FP32
    )
    key_fp32 = key.to(tl.float32)
    memory_norm = tl.sum(key_fp32 * key_fp32, axis=0)  # ‖k_n‖², used by l2
    logits = _scaled_logits(
        tl.dot(query, key, input_precision="ieee"),
        memory_norm[None, :],
        scale,
        SIMILARITY_L2,
    )
    if HAS_GAUSSIAN:
        center_y, center_x, sigma = _load_gaussian(
            centers_ptr, sigma_ptr, b, N, offs_n, memory_valid
        )
        logits += _log_gaussian(
            query_y[:, None],
            query_x[:, None],
            center_y[None, :],
            center_x[None, :],
            sigma[None, :],
        )
    return key, logits


@triton.jit
def _grad_probs(
    grad_readout_ptr,
    memory_value_ptr,
    b,
    CV,
    M,
    N,
    offs_m,
    query_valid,
    offs_n,
    memory_valid,
    MEMORY_ROWS: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_CV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # dP = v · dO over all value channels: [BLOCK_N, BLOCK_M] with MEMORY_ROWS, else its
    # transpose [BLOCK_M, BLOCK_N]
    if MEMORY_ROWS:
        grad_probs = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    else:
        grad_probs = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for start_cv in range(0, CV, BLOCK_CV):
        offs_c = start_cv + tl.arange(0, BLOCK_CV)
        in_c = offs_c < CV
        if MEMORY_ROWS:
            value = _load_tile(
                memory_value_ptr, b, CV, N, offs_c, in_c, offs_n, memory_valid, True, DOT_FP32
            )  # [BLOCK_N, BLOCK_CV]
            grad_out_t = _load_tile(
                grad_readout_ptr, b, CV, M, offs_c, in_c, offs_m, query_valid, False, DOT_FP32
            )  # [BLOCK_CV, BLOCK_M]
            grad_probs += tl.dot(value, grad_out_t, input_precision="ieee")
        else:
            grad_out = _load_tile(
                grad_readout_ptr, b, CV, M, offs_c, in_c, offs_m, query_valid, True, DOT_FP32
            )  # [BLOCK_M, BLOCK_CV]
            value_t = _load_tile(
                memory_value_ptr, b, CV, N, offs_c, in_c, offs_n, memory_valid, False, DOT_FP32
            )  # [BLOCK_CV, BLOCK_N]
            grad_probs += tl.dot(grad_out, value_t, input_precision="ieee")
    return grad_probs


@triton.autotune(
    configs=_forward_configs(),
    key=_TUNING_KEY,
    prune_configs_by={"early_config_prune": _prune_forward_configs},
)
@triton.jit
def _memory_read_forward_kernel(
    query_key_ptr,  # [B, Ck, M]
    memory_key_ptr,  # [B, Ck, N]
    memory_value_ptr,  # [B, Cv, N]
    query_mask_ptr,  # [B, M] uint8
    memory_mask_ptr,  # [B, N] uint8
    centers_ptr,  # [B, N, 2] fp32
    sigma_ptr,  # [B, N] fp32
    readout_ptr,  # [B, Cv, M] fp32
    logsumexp_ptr,  # [B, M] fp32
    block_counter_ptr,  # [1] int32, only with COUNT_BLOCKS
    scale,
    CK,
    CV,
    N,
    M,
    GRID_W,
    N_BUCKET,
    M_BUCKET,
    SIMILARITY_L2: tl.constexpr,
    HAS_QUERY_MASK: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
    HAS_GAUSSIAN: tl.constexpr,
    COUNT_BLOCKS: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_CK: tl.constexpr,
    BLOCK_CV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    query_block = tl.program_id(0)
    value_block = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_m = query_block * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_cv = value_block * BLOCK_CV + tl.arange(0, BLOCK_CV)
    offs_ck = tl.arange(0, BLOCK_CK)
    in_m = offs_m < M
    in_cv = offs_cv < CV
    in_ck = offs_ck < CK

    query_valid = _load_valid(query_mask_ptr, b, M, offs_m, HAS_QUERY_MASK)

    accumulator = tl.zeros([BLOCK_M, BLOCK_CV], dtype=tl.float32)
    running_max = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    running_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    # a query block with no valid pixel loads nothing and writes zeros
    if _any_valid(query_valid):
        query = _load_tile(
            query_key_ptr, b, CK, M, offs_ck, in_ck, offs_m, query_valid, True, DOT_FP32
        )  # [BLOCK_M, BLOCK_CK]
        query_y, query_x = _grid_yx(offs_m, GRID_W)
        for start_n in range(0, N, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            memory_valid = _load_valid(memory_mask_ptr, b, N, offs_n, HAS_MEMORY_MASK)
            # block skipping: a memory block with no valid pixel is never loaded nor computed
            if _any_valid(memory_valid):
                if COUNT_BLOCKS:
                    tl.atomic_add(block_counter_ptr, 1)
                key, logits = _query_block_logits(
                    query, query_y, query_x, memory_key_ptr, centers_ptr, sigma_ptr, b, scale, CK,
                    N, offs_ck, in_ck, offs_n, memory_valid, SIMILARITY_L2, HAS_GAUSSIAN, DOT_FP32,
                )  # [BLOCK_M, BLOCK_N]  # fmt: skip
                # RMNet Eq. 7: excluded memory pixels get exp(S) = 0
                logits = tl.where(memory_valid[None, :], logits, float("-inf"))
                # online softmax: rescale the running sum and accumulator to the new max
                new_max = tl.maximum(running_max, tl.max(logits, axis=1))
                shift = tl.where(new_max == float("-inf"), 0.0, new_max)
                correction = tl.exp(running_max - shift)
                weights = tl.exp(logits - shift[:, None])
                running_sum = running_sum * correction + tl.sum(weights, axis=1)
                value = _load_tile(
                    memory_value_ptr, b, CV, N, offs_cv, in_cv, offs_n, memory_valid, True, DOT_FP32
                )  # [BLOCK_N, BLOCK_CV]
                # readout += softmax weights · values
                accumulator = accumulator * correction[:, None] + tl.dot(
                    weights.to(value.dtype), value, input_precision="ieee"
                )
                running_max = new_max

    # normalise; a query with no valid memory pixel (running_sum = 0) reads 0
    has_memory = running_sum > 0
    readout = accumulator / tl.where(has_memory, running_sum, 1.0)[:, None]
    readout = tl.where(query_valid[:, None], readout, 0.0)
    tl.store(
        readout_ptr + b * CV * M + offs_cv[None, :] * M + offs_m[:, None],
        readout.to(readout_ptr.dtype.element_ty),
        mask=in_m[:, None] & in_cv[None, :],
    )
    # L = max + log(sum); +∞ where there is no memory, so that backward's exp(S − L) is 0
    logsumexp = tl.where(
        has_memory, running_max + tl.log(tl.where(has_memory, running_sum, 1.0)), float("inf")
    )
    tl.store(logsumexp_ptr + b * M + offs_m, logsumexp, mask=in_m & (value_block == 0))


@triton.autotune(configs=_backward_configs(), key=_TUNING_KEY + ["COMPUTE_DK", "COMPUTE_DV"])
@triton.jit
def _memory_read_backward_memory_kernel(
    query_key_ptr,  # [B, Ck, M]
    memory_key_ptr,  # [B, Ck, N]
    memory_value_ptr,  # [B, Cv, N]
    query_mask_ptr,  # [B, M] uint8
    memory_mask_ptr,  # [B, N] uint8
    centers_ptr,  # [B, N, 2] fp32
    sigma_ptr,  # [B, N] fp32
    grad_readout_ptr,  # [B, Cv, M]
    logsumexp_ptr,  # [B, M] fp32
    delta_ptr,  # [B, M] fp32: Σ_c dO·O
    grad_memory_key_ptr,  # [B, Ck, N]
    grad_memory_value_ptr,  # [B, Cv, N]
    scale,
    CK,
    CV,
    N,
    M,
    GRID_W,
    N_BUCKET,
    M_BUCKET,
    SIMILARITY_L2: tl.constexpr,
    HAS_QUERY_MASK: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
    HAS_GAUSSIAN: tl.constexpr,
    COMPUTE_DK: tl.constexpr,
    COMPUTE_DV: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_CK: tl.constexpr,
    BLOCK_CV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    memory_block = tl.program_id(0)
    value_block = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_n = memory_block * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_cv = value_block * BLOCK_CV + tl.arange(0, BLOCK_CV)
    offs_ck = tl.arange(0, BLOCK_CK)
    in_n = offs_n < N
    in_cv = offs_cv < CV
    in_ck = offs_ck < CK

    memory_valid = _load_valid(memory_mask_ptr, b, N, offs_n, HAS_MEMORY_MASK)

    grad_key = tl.zeros([BLOCK_N, BLOCK_CK], dtype=tl.float32)  # Σ_m dS q_m
    grad_logit_sum = tl.zeros([BLOCK_N], dtype=tl.float32)  # Σ_m dS, for l2
    grad_value = tl.zeros([BLOCK_N, BLOCK_CV], dtype=tl.float32)
    key_fp32 = tl.zeros([BLOCK_N, BLOCK_CK], dtype=tl.float32)  # for l2's −k Σ dS term
    # skipped memory blocks get zero gradients, nothing loaded
    if _any_valid(memory_valid):
        key = _load_tile(
            memory_key_ptr, b, CK, N, offs_ck, in_ck, offs_n, memory_valid, True, DOT_FP32
        )  # [BLOCK_N, BLOCK_CK]
        key_fp32 = key.to(tl.float32)
        memory_norm = tl.sum(key_fp32 * key_fp32, axis=1)
        if HAS_GAUSSIAN:
            center_y, center_x, sigma = _load_gaussian(
                centers_ptr, sigma_ptr, b, N, offs_n, memory_valid
            )
        for start_m in range(0, M, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            query_valid = _load_valid(query_mask_ptr, b, M, offs_m, HAS_QUERY_MASK)
            if _any_valid(query_valid):
                query = _load_tile(
                    query_key_ptr, b, CK, M, offs_ck, in_ck, offs_m, query_valid, False, DOT_FP32
                )  # [BLOCK_CK, BLOCK_M]
                # recompute S and P = exp(S − L) for this (memory, query) block pair
                logits = _scaled_logits(
                    tl.dot(key, query, input_precision="ieee"),
                    memory_norm[:, None],
                    scale,
                    SIMILARITY_L2,
                )  # [BLOCK_N, BLOCK_M]
                if HAS_GAUSSIAN:
                    query_y, query_x = _grid_yx(offs_m, GRID_W)
                    logits += _log_gaussian(
                        query_y[None, :],
                        query_x[None, :],
                        center_y[:, None],
                        center_x[:, None],
                        sigma[:, None],
                    )
                logsumexp = tl.load(logsumexp_ptr + b * M + offs_m, mask=query_valid, other=0.0)
                pair_valid = memory_valid[:, None] & query_valid[None, :]
                probs = tl.where(pair_valid, tl.exp(logits - logsumexp[None, :]), 0.0)
                if COMPUTE_DV:
                    # dV = P · dOᵀ (this program's value channels)
                    grad_out = _load_tile(
                        grad_readout_ptr, b, CV, M, offs_cv, in_cv, offs_m, query_valid, True,
                        DOT_FP32,
                    )  # [BLOCK_M, BLOCK_CV]  # fmt: skip
                    grad_value += tl.dot(probs.to(grad_out.dtype), grad_out, input_precision="ieee")
                if COMPUTE_DK:
                    # dP = v · dO over all value channels, then dS = P (dP − Δ)
                    grad_probs = _grad_probs(
                        grad_readout_ptr, memory_value_ptr, b, CV, M, N, offs_m, query_valid,
                        offs_n, memory_valid, True, DOT_FP32, BLOCK_CV, BLOCK_M, BLOCK_N,
                    )  # [BLOCK_N, BLOCK_M]  # fmt: skip
                    delta = tl.load(delta_ptr + b * M + offs_m, mask=query_valid, other=0.0)
                    grad_logits = probs * (grad_probs - delta[None, :])
                    grad_key += tl.dot(
                        grad_logits.to(query.dtype), tl.trans(query), input_precision="ieee"
                    )
                    grad_logit_sum += tl.sum(grad_logits, axis=1)

    if COMPUTE_DV:
        tl.store(
            grad_memory_value_ptr + b * CV * N + offs_cv[None, :] * N + offs_n[:, None],
            grad_value.to(grad_memory_value_ptr.dtype.element_ty),
            mask=in_n[:, None] & in_cv[None, :],
        )
    if COMPUTE_DK:
        # dot: dK = scale Σ dS q ; l2: dK = 2 scale (Σ dS q − k Σ dS)
        if SIMILARITY_L2:
            grad_key = 2.0 * scale * (grad_key - key_fp32 * grad_logit_sum[:, None])
        else:
            grad_key = scale * grad_key
        tl.store(
            grad_memory_key_ptr + b * CK * N + offs_ck[None, :] * N + offs_n[:, None],
            grad_key.to(grad_memory_key_ptr.dtype.element_ty),
            mask=in_n[:, None] & in_ck[None, :],
        )


@triton.autotune(configs=_backward_configs(), key=_TUNING_KEY)
@triton.jit
def _memory_read_backward_query_kernel(
    query_key_ptr,  # [B, Ck, M]
    memory_key_ptr,  # [B, Ck, N]
    memory_value_ptr,  # [B, Cv, N]
    query_mask_ptr,  # [B, M] uint8
    memory_mask_ptr,  # [B, N] uint8
    centers_ptr,  # [B, N, 2] fp32
    sigma_ptr,  # [B, N] fp32
    grad_readout_ptr,  # [B, Cv, M]
    logsumexp_ptr,  # [B, M] fp32
    delta_ptr,  # [B, M] fp32
    grad_query_key_ptr,  # [B, Ck, M]
    scale,
    CK,
    CV,
    N,
    M,
    GRID_W,
    N_BUCKET,
    M_BUCKET,
    SIMILARITY_L2: tl.constexpr,
    HAS_QUERY_MASK: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
    HAS_GAUSSIAN: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_CK: tl.constexpr,
    BLOCK_CV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    query_block = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_m = query_block * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_ck = tl.arange(0, BLOCK_CK)
    in_m = offs_m < M
    in_ck = offs_ck < CK

    query_valid = _load_valid(query_mask_ptr, b, M, offs_m, HAS_QUERY_MASK)

    grad_query = tl.zeros([BLOCK_M, BLOCK_CK], dtype=tl.float32)  # Σ_n dS k_n
    if _any_valid(query_valid):
        query = _load_tile(
            query_key_ptr, b, CK, M, offs_ck, in_ck, offs_m, query_valid, True, DOT_FP32
        )  # [BLOCK_M, BLOCK_CK]
        query_y, query_x = _grid_yx(offs_m, GRID_W)
        logsumexp = tl.load(logsumexp_ptr + b * M + offs_m, mask=query_valid, other=0.0)
        delta = tl.load(delta_ptr + b * M + offs_m, mask=query_valid, other=0.0)
        for start_n in range(0, N, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            memory_valid = _load_valid(memory_mask_ptr, b, N, offs_n, HAS_MEMORY_MASK)
            if _any_valid(memory_valid):
                # recompute S and P = exp(S − L)
                key, logits = _query_block_logits(
                    query, query_y, query_x, memory_key_ptr, centers_ptr, sigma_ptr, b, scale, CK,
                    N, offs_ck, in_ck, offs_n, memory_valid, SIMILARITY_L2, HAS_GAUSSIAN, DOT_FP32,
                )  # [BLOCK_M, BLOCK_N]  # fmt: skip
                pair_valid = query_valid[:, None] & memory_valid[None, :]
                probs = tl.where(pair_valid, tl.exp(logits - logsumexp[:, None]), 0.0)
                # dP = dO · v over all value channels, then dS = P (dP − Δ)
                grad_probs = _grad_probs(
                    grad_readout_ptr, memory_value_ptr, b, CV, M, N, offs_m, query_valid, offs_n,
                    memory_valid, False, DOT_FP32, BLOCK_CV, BLOCK_M, BLOCK_N,
                )  # [BLOCK_M, BLOCK_N]  # fmt: skip
                grad_logits = probs * (grad_probs - delta[:, None])
                grad_query += tl.dot(
                    grad_logits.to(key.dtype), tl.trans(key), input_precision="ieee"
                )

    # dot: dQ = scale Σ dS k ; l2: dQ = 2 scale Σ dS k
    grad_query = grad_query * scale
    if SIMILARITY_L2:
        grad_query = 2.0 * grad_query
    tl.store(
        grad_query_key_ptr + b * CK * M + offs_ck[None, :] * M + offs_m[:, None],
        grad_query.to(grad_query_key_ptr.dtype.element_ty),
        mask=in_m[:, None] & in_ck[None, :],
    )


_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _bucket(size: int) -> int:
    return triton.next_power_of_2(max(int(size), 1))


class _Launch:
    """Sizes, constexpr switches and optional tensors shared by the three kernels."""

    def __init__(
        self,
        query_key: Tensor,
        memory_key: Tensor,
        memory_value: Tensor,
        query_mask: Tensor | None,
        memory_mask: Tensor | None,
        gaussian_centers: Tensor | None,
        gaussian_sigma: Tensor | None,
        query_hw: tuple[int, int] | None,
        similarity: str,
        scale: float,
    ):
        self.batch, self.key_channels, self.queries = query_key.shape
        self.value_channels, self.memories = memory_value.shape[1:]
        self.scale = float(scale)
        self.grid_width = int(query_hw[1]) if query_hw is not None else 1
        device = query_key.device
        placeholder = torch.empty(1, device=device, dtype=torch.uint8)
        placeholder_fp32 = torch.empty(1, device=device, dtype=torch.float32)
        self.query_mask = (
            placeholder if query_mask is None else query_mask.contiguous().view(torch.uint8)
        )
        self.memory_mask = (
            placeholder if memory_mask is None else memory_mask.contiguous().view(torch.uint8)
        )
        has_gaussian = gaussian_centers is not None
        self.centers = (
            gaussian_centers.detach().float().contiguous() if has_gaussian else placeholder_fp32
        )
        self.sigma = (
            gaussian_sigma.detach().float().contiguous() if has_gaussian else placeholder_fp32
        )
        self.block_ck = max(16, triton.next_power_of_2(self.key_channels))
        # backward's value-channel block (the forward's is autotuned)
        max_block_cv = INTERPRETER_BLOCK_CV if _interpreting() else BACKWARD_BLOCK_CV
        self.block_cv = min(max_block_cv, max(16, triton.next_power_of_2(self.value_channels)))
        self.value_blocks = triton.cdiv(self.value_channels, self.block_cv)
        # the interpreter's bf16 dot products are wrong: compute bf16 tiles in fp32 there
        dtype = query_key.dtype
        self.store_fp32 = dtype == torch.bfloat16 and _interpreting()
        self.constants = dict(
            SIMILARITY_L2=similarity == "l2",
            HAS_QUERY_MASK=query_mask is not None,
            HAS_MEMORY_MASK=memory_mask is not None,
            HAS_GAUSSIAN=has_gaussian,
            DOT_FP32=dtype == torch.float32 or (dtype == torch.bfloat16 and _interpreting()),
            BLOCK_CK=self.block_ck,
        )

    def sizes(self) -> tuple:
        return (
            self.scale,
            self.key_channels,
            self.value_channels,
            self.memories,
            self.queries,
            self.grid_width,
            _bucket(self.memories),
            _bucket(self.queries),
        )


def _check_kernel_inputs(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    query_mask: Tensor | None,
    memory_mask: Tensor | None,
    gaussian_centers: Tensor | None,
    gaussian_sigma: Tensor | None,
    query_hw: tuple[int, int] | None,
    similarity: str,
) -> None:
    if query_key.dim() != 3 or memory_key.dim() != 3 or memory_value.dim() != 3:
        raise ValueError("memory_read kernel: keys and values must be [B, C, pixels]")
    batch, key_channels, queries = query_key.shape
    memories = memory_key.shape[2]
    if memory_key.shape[:2] != (batch, key_channels):
        raise ValueError(
            f"memory_read kernel: query_key {tuple(query_key.shape)} and memory_key "
            f"{tuple(memory_key.shape)} must share [B, Ck]"
        )
    if memory_value.shape[0] != batch or memory_value.shape[2] != memories:
        raise ValueError(
            f"memory_read kernel: memory_key {tuple(memory_key.shape)} and memory_value "
            f"{tuple(memory_value.shape)} must share [B, ·, N]"
        )
    dtypes = {query_key.dtype, memory_key.dtype, memory_value.dtype}
    if len(dtypes) != 1 or query_key.dtype not in _KERNEL_DTYPES:
        raise TypeError(
            "memory_read kernel: query_key, memory_key and memory_value must share one dtype "
            f"among fp32/fp16/bf16, got {query_key.dtype}, {memory_key.dtype}, {memory_value.dtype}"
        )
    devices = {query_key.device, memory_key.device, memory_value.device}
    for tensor in (query_mask, memory_mask, gaussian_centers, gaussian_sigma):
        if tensor is not None:
            devices.add(tensor.device)
    if len(devices) != 1:
        raise ValueError(f"memory_read kernel: all tensors must be on one device, got {devices}")
    if similarity not in ("dot", "l2"):
        raise ValueError(f"memory_read kernel: unknown similarity {similarity!r}")
    for name, mask, length in (
        ("query_mask", query_mask, queries),
        ("memory_mask", memory_mask, memories),
    ):
        if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != (batch, length)):
            raise ValueError(
                f"memory_read kernel: {name} must be bool [{batch}, {length}], got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
    if gaussian_centers is not None:
        if gaussian_sigma is None or query_hw is None:
            raise ValueError(
                "memory_read kernel: gaussian_centers needs gaussian_sigma and query_hw"
            )
        if tuple(gaussian_centers.shape) != (batch, memories, 2) or tuple(gaussian_sigma.shape) != (
            batch,
            memories,
        ):
            raise ValueError(
                f"memory_read kernel: gaussian_centers must be [{batch}, {memories}, 2] and "
                f"gaussian_sigma [{batch}, {memories}], got {tuple(gaussian_centers.shape)} and "
                f"{tuple(gaussian_sigma.shape)}"
            )
        if query_hw[0] * query_hw[1] != queries:
            raise ValueError(
                f"memory_read kernel: query_hw={tuple(query_hw)} does not match M={queries}"
            )


class MemoryReadFunction(torch.autograd.Function):
    """Flash-style memory read; gradients for the keys and values only."""

    @staticmethod
    def forward(
        ctx,
        query_key: Tensor,
        memory_key: Tensor,
        memory_value: Tensor,
        query_mask: Tensor | None,
        memory_mask: Tensor | None,
        gaussian_centers: Tensor | None,
        gaussian_sigma: Tensor | None,
        query_hw: tuple[int, int] | None,
        similarity: str,
        scale: float,
        block_counter: Tensor | None,
    ) -> Tensor:
        query_key = query_key.contiguous()
        memory_key = memory_key.contiguous()
        memory_value = memory_value.contiguous()
        launch = _Launch(
            query_key,
            memory_key,
            memory_value,
            query_mask,
            memory_mask,
            gaussian_centers,
            gaussian_sigma,
            query_hw,
            similarity,
            scale,
        )
        readout = torch.empty(
            launch.batch,
            launch.value_channels,
            launch.queries,
            device=query_key.device,
            dtype=torch.float32,
        )
        logsumexp = torch.empty(
            launch.batch, launch.queries, device=query_key.device, dtype=torch.float32
        )
        counter = block_counter
        if counter is None:
            counter = torch.zeros(1, device=query_key.device, dtype=torch.int32)

        def grid(meta):
            return (
                triton.cdiv(launch.queries, meta["BLOCK_M"]),
                triton.cdiv(launch.value_channels, meta["BLOCK_CV"]),
                launch.batch,
            )

        _memory_read_forward_kernel[grid](
            query_key,
            memory_key,
            memory_value,
            launch.query_mask,
            launch.memory_mask,
            launch.centers,
            launch.sigma,
            readout,
            logsumexp,
            counter,
            *launch.sizes(),
            COUNT_BLOCKS=block_counter is not None,
            **launch.constants,
        )
        ctx.launch = launch
        # the fp32 readout is kept for backward's Δ = Σ dO·O (rounding O first costs accuracy)
        ctx.save_for_backward(query_key, memory_key, memory_value, readout, logsumexp)
        return readout.to(memory_value.dtype)

    @staticmethod
    def backward(ctx, grad_readout: Tensor):
        query_key, memory_key, memory_value, readout, logsumexp = ctx.saved_tensors
        launch: _Launch = ctx.launch
        grad_readout = grad_readout.contiguous()
        # Δ_m = Σ_c dO[c, m]·O[c, m] (the softmax backward's row term); O is 0 at masked queries
        delta = (grad_readout.float() * readout.float()).sum(dim=1).contiguous()
        # the interpreter truncates fp32 -> bf16 on store (no rounding): store fp32 there
        grad_dtype = torch.float32 if launch.store_fp32 else query_key.dtype
        grad_query_key = torch.empty_like(query_key, dtype=grad_dtype)
        grad_memory_key = torch.empty_like(memory_key, dtype=grad_dtype)
        grad_memory_value = torch.empty_like(memory_value, dtype=grad_dtype)
        common = (
            query_key,
            memory_key,
            memory_value,
            launch.query_mask,
            launch.memory_mask,
            launch.centers,
            launch.sigma,
            grad_readout,
            logsumexp,
            delta,
        )
        needs_query, needs_key, needs_value = ctx.needs_input_grad[:3]
        if needs_key or needs_value:
            if launch.value_blocks == 1:
                passes = [(True, True, 1)]  # dK and dV in one pass over the query blocks
            else:
                passes = [(True, False, 1), (False, True, launch.value_blocks)]
            for compute_dk, compute_dv, value_programs in passes:

                def memory_grid(meta, value_programs=value_programs):
                    return (
                        triton.cdiv(launch.memories, meta["BLOCK_N"]),
                        value_programs,
                        launch.batch,
                    )

                _memory_read_backward_memory_kernel[memory_grid](
                    *common,
                    grad_memory_key,
                    grad_memory_value,
                    *launch.sizes(),
                    COMPUTE_DK=compute_dk,
                    COMPUTE_DV=compute_dv,
                    BLOCK_CV=launch.block_cv,
                    **launch.constants,
                )
        if needs_query:

            def query_grid(meta):
                return (triton.cdiv(launch.queries, meta["BLOCK_M"]), launch.batch)

            _memory_read_backward_query_kernel[query_grid](
                *common,
                grad_query_key,
                *launch.sizes(),
                BLOCK_CV=launch.block_cv,
                **launch.constants,
            )
        return (
            grad_query_key.to(query_key.dtype) if needs_query else None,
            grad_memory_key.to(memory_key.dtype) if needs_key else None,
            grad_memory_value.to(memory_value.dtype) if needs_value else None,
            *([None] * 8),
        )


def memory_read_triton(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    *,
    similarity: str = "dot",
    scale: float | None = None,
    query_mask: Tensor | None = None,
    memory_mask: Tensor | None = None,
    gaussian_centers: Tensor | None = None,
    gaussian_sigma: Tensor | None = None,
    query_hw: tuple[int, int] | None = None,
    block_counter: Tensor | None = None,
) -> Tensor:
    """The Triton memory read, ``[B, Cv, M]`` in the inputs' dtype (see the module docstring).

    ``block_counter``: an int32 ``[1]`` tensor that, when given, is incremented once per
    (query block, value-channel block, memory block) the forward kernel computes — tests use
    it under the interpreter (one config, no autotuning re-runs) to check that masked blocks
    are skipped. Gradients flow to the keys and values only.
    """
    _check_kernel_inputs(
        query_key,
        memory_key,
        memory_value,
        query_mask,
        memory_mask,
        gaussian_centers,
        gaussian_sigma,
        query_hw,
        similarity,
    )
    if scale is None:
        scale = query_key.shape[1] ** -0.5
    return MemoryReadFunction.apply(
        query_key,
        memory_key,
        memory_value,
        query_mask,
        memory_mask,
        gaussian_centers,
        gaussian_sigma,
        query_hw,
        similarity,
        float(scale),
        block_counter,
    )
