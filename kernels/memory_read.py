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

Layout and pipelining: every ``[B, C, P]`` tensor reaches the kernels with its channel rows
padded to a multiple of 16 pixels and the padding zero-filled (`pad_pixels`; a contiguous
tensor with P a multiple of 16 is used as is). Rows then start 16-element aligned and, without
a mask, a tile loads whole padded rows, a bound that is uniform over 16-pixel groups: the loads
vectorise (at res4 of 480p, P = 1620 and 8100, an fp16 row would otherwise load 2 bytes at a
time). Without a mask the loops carry no branch either, so Triton software-pipelines them
(``num_stages``: ``cp.async`` copies into shared memory); the masks' block skipping is the only
branch, and exists only in the masked variants (compile-time switches).

Top-k (STCN's truncated softmax, ``top_k < N``): before the softmax loop, the same program
makes a first pass over the memory that keeps each query row's BLOCK_N largest logits — merging
a block by the half-cleaner of a bitonic merge (the running list sorted descending against the
block sorted ascending: their elementwise max holds the BLOCK_N largest of both) and sorting
again — and takes the k-th largest as the row's threshold; the softmax loop then drops the
logits below it, and backward applies the same threshold (stored per query). Hence
``top_k <= BLOCK_N`` (`max_top_k`: 32 or 64 on a GPU, 16 under the interpreter) and one more
QKᵀ per program. Logits within ``TOP_K_TIE_SLACK`` (relative) of the k-th count as ties and are
kept, as the reference keeps exact ties, so that backward, whose tiles round differently, keeps
the same set.

Block skipping (RMNet's regional read): a program first loads its query block's mask and, if
no query pixel in it is valid, loads nothing else and writes zeros. For every memory block it
loads the block's slice of the memory mask (BLOCK_N bytes) and reduces it to "any valid"
before anything else; a block with no valid pixel is skipped entirely — its keys, values and
Gaussian parameters are never loaded and no dot product is issued. Blocks are runs of pixels
in raster order, so a box's rows each touch their own blocks: an unaligned box of 20% of a
res4 frame, memory and query, makes about 10% of the block pairs live (ideal 4%), a 5% box
1.6% (ideal 0.3%). `vos.kernels.region_pack` packs the valid pixels first and reaches 4.1% and
0.3% (`ops.memory_read` uses it for every masked kernel read). (The "any valid" flag is reduced in the kernel from the mask slice rather than
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
flash-attention). fp32 tiles follow PyTorch's TF32 switch (`dot_precision`): TF32 tensor cores
when ``torch.backends.cuda.matmul.fp32_precision`` is "tf32" (as
``torch.set_float32_matmul_precision("high")`` sets it), else IEEE fp32 products on the FMA
units, for which the tuner has its own, smaller configs (larger tiles spill when pipelined).
The forward writes an fp32 readout,
returned in the input dtype and kept in fp32 for backward's Δ. Triton's interpreter computes
bf16 dot products wrongly and truncates fp32 -> bf16 on store, so under it bf16 tiles are
computed in fp32 and the gradients stored in fp32, then rounded on the host.

Validation: the tests run every kernel under the interpreter against the reference;
``python -m vos.bench kernels`` compiles every launch × autotune config × dtype for sm_80 and
sm_90 without a GPU and reports registers, spills, async copies and tensor-core instructions
(docs/benchmarks.md). The kernels have not been timed on a GPU here. Masked (regional) reads
keep the per-block branch, so their loops are not pipelined.
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
# Tensors over pixels are handed to the kernels with rows padded to a multiple of this
PIXEL_ALIGNMENT = tl.constexpr(16)
# top_k keeps the logits within this relative distance below the k-th largest: the forward's
# threshold pass and the backward recompute logits with other tiles, which may round the k-th
# differently; logits this close to the k-th count as ties (the reference keeps exact ties)
TOP_K_TIE_SLACK = tl.constexpr(1e-5)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _fma_config(config: triton.Config) -> triton.Config:
    config.fma = True  # for IEEE fp32 products on the FMA units (see _prune_forward_configs)
    return config


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
    # Tensor-core configs (fp16, bf16, and fp32 with TF32): chosen so that Ck = 128 at the
    # papers' sizes compiles for sm_80 and sm_90 with no register spills (`vos.bench kernels`);
    # BLOCK_CV = 128 halves the logits recomputed per value-channel block for Cv = 512.
    tensor_core = [
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
            (64, 32, 16, 4, 2),
        )
    ]
    # IEEE fp32 (FMA units): ptxas spills the larger tiles by kilobytes (pipelined, it even
    # drops some to 32 registers); these 32×32 tiles do not spill on sm_80 or sm_90, with or
    # without top-k (`vos.bench kernels`)
    fma = [
        _fma_config(
            triton.Config(
                {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_CV": block_cv},
                num_warps=warps,
                num_stages=stages,
            )
        )
        for block_m, block_n, block_cv, warps, stages in (
            (32, 32, 64, 4, 2),
            (32, 32, 64, 4, 3),
        )
    ]
    return tensor_core + fma


def _uses_fma(launch_constants: dict) -> bool:
    return (
        bool(launch_constants.get("DOT_FP32")) and launch_constants.get("DOT_PRECISION") == "ieee"
    )


def _prune_forward_configs(configs, named_args, **kwargs):
    """The configs of this launch's product path (FMA or tensor cores; the interpreter's one
    config serves both), with BLOCK_N >= top_k, dropping value-channel blocks wider than Cv
    needs (keeping the narrowest if none fits)."""
    if not _interpreting():
        fma = _uses_fma(kwargs)
        configs = [c for c in configs if getattr(c, "fma", False) == fma]
    if kwargs.get("HAS_TOP_K"):
        configs = [c for c in configs if c.kwargs["BLOCK_N"] >= kwargs["top_k"]]
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

    def config(block_m, block_n, warps, stages):
        return triton.Config(
            {"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps, num_stages=stages
        )

    tensor_core = [
        config(*blocks)
        for blocks in (
            (32, 64, 8, 2),
            (64, 32, 8, 2),
            (32, 64, 8, 3),
            (64, 32, 8, 3),
            (32, 32, 4, 2),
        )
    ]
    # IEEE fp32: the tensor-core tiles spill 0.2-0.6 KB in dK and dQ on sm_80; these do not
    fma = [_fma_config(config(*blocks)) for blocks in ((32, 32, 8, 2), (32, 16, 4, 2))]
    return tensor_core + fma


def _prune_backward_configs(configs, named_args, **kwargs):
    """The configs of this launch's product path: FMA (IEEE fp32) or tensor cores."""
    if _interpreting():
        return configs
    fma = _uses_fma(kwargs)
    return [c for c in configs if getattr(c, "fma", False) == fma]


# Autotuning keys: size buckets (powers of two), so a memory that grows by one frame does not
# trigger a new tuning run; the batch (batch × objects: it sets how many programs fill the
# GPU); the channel counts; and the compile-time variants (masks and the dot precision change
# the best blocks).
_TUNING_KEY = [
    "N_BUCKET",
    "M_BUCKET",
    "B_BUCKET",
    "CK",
    "CV",
    "SIMILARITY_L2",
    "HAS_GAUSSIAN",
    "HAS_QUERY_MASK",
    "HAS_MEMORY_MASK",
    "DOT_PRECISION",
    "HAS_TOP_K",
]


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
def _pixel_stride(P):
    # the channel stride of every [B, C, P] tensor the kernels read or write: P rounded up to a
    # multiple of 16 (the host pads, see `pad_pixels`), so that each channel row starts
    # 16-element aligned and Triton can vectorise the loads and pipeline them (cp.async needs
    # 4-16 aligned bytes; with P = 8100 an fp16 row start is only 2-byte aligned)
    return tl.multiple_of((P + PIXEL_ALIGNMENT - 1) // PIXEL_ALIGNMENT * PIXEL_ALIGNMENT, 16)


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
    MASKED: tl.constexpr,
):
    # a tile of a [B, C, P] tensor stored with padded rows (`_pixel_stride`): [channels,
    # pixels], or [pixels, channels] with PIXEL_ROWS; masked pixels and channels load as zeros,
    # so a NaN outside a mask (or in the padding) never reaches a product
    stride = _pixel_stride(P)
    base = ptr + b * C * stride
    if MASKED:
        load_p = valid_p  # per pixel: a masked-out pixel is never read
    else:
        # without a mask, the whole padded row: the host zero-fills the padding, and the bound
        # is uniform over 16-pixel groups, so the load vectorises (a bound at P = 8100 would
        # make every fp16 element its own 2-byte load, too narrow for cp.async)
        load_p = offs_p < stride
    if PIXEL_ROWS:
        tile = tl.load(
            base + offs_c[None, :] * stride + offs_p[:, None],
            mask=load_p[:, None] & in_c[None, :],
            other=0.0,
        )
    else:
        tile = tl.load(
            base + offs_c[:, None] * stride + offs_p[None, :],
            mask=in_c[:, None] & load_p[None, :],
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
    DOT_PRECISION: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
):
    # a query block's logits S [BLOCK_M, BLOCK_N] against one memory block (not yet masked),
    # and the block's keys [BLOCK_CK, BLOCK_N]
    key = _load_tile(
        memory_key_ptr,
        b,
        CK,
        N,
        offs_ck,
        in_ck,
        offs_n,
        memory_valid,
        False,
        DOT_FP32,
        HAS_MEMORY_MASK,
    )
    key_fp32 = key.to(tl.float32)
    memory_norm = tl.sum(key_fp32 * key_fp32, axis=0)  # ‖k_n‖², used by l2
    logits = _scaled_logits(
        tl.dot(query, key, input_precision=DOT_PRECISION),
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
    DOT_PRECISION: tl.constexpr,
    BLOCK_CV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_QUERY_MASK: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
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
                memory_value_ptr,
                b,
                CV,
                N,
                offs_c,
                in_c,
                offs_n,
                memory_valid,
                True,
                DOT_FP32,
                HAS_MEMORY_MASK,
            )  # [BLOCK_N, BLOCK_CV]
            grad_out_t = _load_tile(
                grad_readout_ptr,
                b,
                CV,
                M,
                offs_c,
                in_c,
                offs_m,
                query_valid,
                False,
                DOT_FP32,
                HAS_QUERY_MASK,
            )  # [BLOCK_CV, BLOCK_M]
            grad_probs += tl.dot(value, grad_out_t, input_precision=DOT_PRECISION)
        else:
            grad_out = _load_tile(
                grad_readout_ptr,
                b,
                CV,
                M,
                offs_c,
                in_c,
                offs_m,
                query_valid,
                True,
                DOT_FP32,
                HAS_QUERY_MASK,
            )  # [BLOCK_M, BLOCK_CV]
            value_t = _load_tile(
                memory_value_ptr,
                b,
                CV,
                N,
                offs_c,
                in_c,
                offs_n,
                memory_valid,
                False,
                DOT_FP32,
                HAS_MEMORY_MASK,
            )  # [BLOCK_CV, BLOCK_N]
            grad_probs += tl.dot(grad_out, value_t, input_precision=DOT_PRECISION)
    return grad_probs


@triton.jit
def _forward_block(
    accumulator,
    running_max,
    running_sum,
    query,
    query_y,
    query_x,
    memory_key_ptr,
    memory_value_ptr,
    centers_ptr,
    sigma_ptr,
    b,
    scale,
    CK,
    CV,
    N,
    offs_ck,
    in_ck,
    offs_cv,
    in_cv,
    offs_n,
    memory_valid,
    SIMILARITY_L2: tl.constexpr,
    HAS_GAUSSIAN: tl.constexpr,
    DOT_FP32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
    threshold,
    HAS_TOP_K: tl.constexpr,
):
    # one memory block of the online softmax: returns the updated accumulator, max and sum
    key, logits = _query_block_logits(
        query, query_y, query_x, memory_key_ptr, centers_ptr, sigma_ptr, b, scale, CK, N,
        offs_ck, in_ck, offs_n, memory_valid, SIMILARITY_L2, HAS_GAUSSIAN, DOT_FP32,
        DOT_PRECISION, HAS_MEMORY_MASK=HAS_MEMORY_MASK,
    )  # [BLOCK_M, BLOCK_N]  # fmt: skip
    # RMNet Eq. 7: excluded memory pixels (and the tail past N) get exp(S) = 0
    logits = tl.where(memory_valid[None, :], logits, float("-inf"))
    if HAS_TOP_K:
        # STCN's truncated softmax: only the logits at or above the row's k-th largest
        logits = tl.where(logits >= threshold[:, None], logits, float("-inf"))
    # online softmax: rescale the running sum and accumulator to the new max
    new_max = tl.maximum(running_max, tl.max(logits, axis=1))
    shift = tl.where(new_max == float("-inf"), 0.0, new_max)
    correction = tl.exp(running_max - shift)
    weights = tl.exp(logits - shift[:, None])
    running_sum = running_sum * correction + tl.sum(weights, axis=1)
    value = _load_tile(
        memory_value_ptr,
        b,
        CV,
        N,
        offs_cv,
        in_cv,
        offs_n,
        memory_valid,
        True,
        DOT_FP32,
        HAS_MEMORY_MASK,
    )  # [BLOCK_N, BLOCK_CV]
    # readout += softmax weights · values
    accumulator = accumulator * correction[:, None] + tl.dot(
        weights.to(value.dtype), value, input_precision=DOT_PRECISION
    )
    return accumulator, new_max, running_sum


@triton.jit
def _top_k_merge(
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
    # `best` (each row's BLOCK_N largest logits so far, descending) merged with one memory
    # block's: against the block's logits sorted ascending, the elementwise max holds the
    # BLOCK_N largest of the two lists (the half-cleaner of a bitonic merge); sort it again
    key, logits = _query_block_logits(
        query, query_y, query_x, memory_key_ptr, centers_ptr, sigma_ptr, b, scale, CK, N,
        offs_ck, in_ck, offs_n, memory_valid, SIMILARITY_L2, HAS_GAUSSIAN, DOT_FP32,
        DOT_PRECISION, HAS_MEMORY_MASK,
    )  # fmt: skip
    logits = tl.where(memory_valid[None, :], logits, float("-inf"))
    merged = tl.maximum(best, tl.sort(logits, dim=1))
    return tl.sort(merged, dim=1, descending=True)


@triton.jit
def _top_k_threshold(
    query,
    query_y,
    query_x,
    memory_key_ptr,
    memory_mask_ptr,
    centers_ptr,
    sigma_ptr,
    b,
    scale,
    CK,
    N,
    offs_ck,
    in_ck,
    top_k,
    SIMILARITY_L2: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
    HAS_GAUSSIAN: tl.constexpr,
    DOT_FP32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # STCN's top-k, flash-style: a first pass over the memory keeps a running top-BLOCK_N of
    # each query row's logits (top_k <= BLOCK_N), never the N×M affinity, and returns the k-th
    # largest, lowered by TOP_K_TIE_SLACK so that logits recomputed with other tiles (the
    # backward's) keep the same k; −inf where fewer than k memory pixels are valid
    best = tl.full([query.shape[0], BLOCK_N], float("-inf"), tl.float32)
    for start_n in range(0, N, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        memory_valid = _load_valid(memory_mask_ptr, b, N, offs_n, HAS_MEMORY_MASK)
        if HAS_MEMORY_MASK:
            if _any_valid(memory_valid):
                best = _top_k_merge(
                    best, query, query_y, query_x, memory_key_ptr, centers_ptr, sigma_ptr, b,
                    scale, CK, N, offs_ck, in_ck, offs_n, memory_valid, SIMILARITY_L2,
                    HAS_MEMORY_MASK, HAS_GAUSSIAN, DOT_FP32, DOT_PRECISION,
                )  # fmt: skip
        else:
            best = _top_k_merge(
                best, query, query_y, query_x, memory_key_ptr, centers_ptr, sigma_ptr, b, scale,
                CK, N, offs_ck, in_ck, offs_n, memory_valid, SIMILARITY_L2, HAS_MEMORY_MASK,
                HAS_GAUSSIAN, DOT_FP32, DOT_PRECISION,
            )  # fmt: skip
    rank = tl.arange(0, BLOCK_N)
    kth = tl.sum(tl.where(rank[None, :] == top_k - 1, best, 0.0), axis=1)
    return kth - TOP_K_TIE_SLACK * (1.0 + tl.abs(kth))


@triton.jit
def _forward_memory_loop(
    accumulator,
    running_max,
    running_sum,
    query_key_ptr,
    memory_key_ptr,
    memory_value_ptr,
    memory_mask_ptr,
    centers_ptr,
    sigma_ptr,
    block_counter_ptr,
    b,
    scale,
    CK,
    CV,
    N,
    M,
    GRID_W,
    offs_m,
    query_valid,
    offs_ck,
    in_ck,
    offs_cv,
    in_cv,
    SIMILARITY_L2: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
    HAS_GAUSSIAN: tl.constexpr,
    COUNT_BLOCKS: tl.constexpr,
    DOT_FP32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_QUERY_MASK: tl.constexpr,
    top_k,
    HAS_TOP_K: tl.constexpr,
):
    query = _load_tile(
        query_key_ptr, b, CK, M, offs_ck, in_ck, offs_m, query_valid, True, DOT_FP32, HAS_QUERY_MASK
    )  # [BLOCK_M, BLOCK_CK]
    query_y, query_x = _grid_yx(offs_m, GRID_W)
    threshold = tl.full(offs_m.shape, float("-inf"), tl.float32)
    if HAS_TOP_K:
        threshold = _top_k_threshold(
            query, query_y, query_x, memory_key_ptr, memory_mask_ptr, centers_ptr, sigma_ptr, b,
            scale, CK, N, offs_ck, in_ck, top_k, SIMILARITY_L2, HAS_MEMORY_MASK, HAS_GAUSSIAN,
            DOT_FP32, DOT_PRECISION, BLOCK_N,
        )  # fmt: skip
    for start_n in range(0, N, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        memory_valid = _load_valid(memory_mask_ptr, b, N, offs_n, HAS_MEMORY_MASK)
        if HAS_MEMORY_MASK:
            # block skipping: a memory block with no valid pixel is never loaded nor computed
            if _any_valid(memory_valid):
                if COUNT_BLOCKS:
                    tl.atomic_add(block_counter_ptr, 1)
                accumulator, running_max, running_sum = _forward_block(
                    accumulator, running_max, running_sum, query, query_y, query_x,
                    memory_key_ptr, memory_value_ptr, centers_ptr, sigma_ptr, b, scale, CK, CV,
                    N, offs_ck, in_ck, offs_cv, in_cv, offs_n, memory_valid, SIMILARITY_L2,
                    HAS_GAUSSIAN, DOT_FP32, DOT_PRECISION, HAS_MEMORY_MASK=HAS_MEMORY_MASK, threshold=threshold, HAS_TOP_K=HAS_TOP_K,
                )  # fmt: skip
        else:
            # no mask, no branch: the loop's loads can be software-pipelined (num_stages)
            if COUNT_BLOCKS:
                tl.atomic_add(block_counter_ptr, 1)
            accumulator, running_max, running_sum = _forward_block(
                accumulator, running_max, running_sum, query, query_y, query_x,
                memory_key_ptr, memory_value_ptr, centers_ptr, sigma_ptr, b, scale, CK, CV, N,
                offs_ck, in_ck, offs_cv, in_cv, offs_n, memory_valid, SIMILARITY_L2,
                HAS_GAUSSIAN, DOT_FP32, DOT_PRECISION, HAS_MEMORY_MASK=HAS_MEMORY_MASK, threshold=threshold, HAS_TOP_K=HAS_TOP_K,
            )  # fmt: skip
    return accumulator, running_max, running_sum, threshold


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
    B_BUCKET,
    SIMILARITY_L2: tl.constexpr,
    HAS_QUERY_MASK: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
    HAS_GAUSSIAN: tl.constexpr,
    COUNT_BLOCKS: tl.constexpr,
    DOT_FP32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_CK: tl.constexpr,
    BLOCK_CV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    threshold_ptr,  # [B, M] fp32, only with HAS_TOP_K,
    top_k,
    HAS_TOP_K: tl.constexpr,
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
    threshold = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    if HAS_QUERY_MASK:
        # a query block with no valid pixel loads nothing and writes zeros
        if _any_valid(query_valid):
            accumulator, running_max, running_sum, threshold = _forward_memory_loop(
                accumulator, running_max, running_sum, query_key_ptr, memory_key_ptr,
                memory_value_ptr, memory_mask_ptr, centers_ptr, sigma_ptr, block_counter_ptr, b,
                scale, CK, CV, N, M, GRID_W, offs_m, query_valid, offs_ck, in_ck, offs_cv, in_cv,
                SIMILARITY_L2, HAS_MEMORY_MASK, HAS_GAUSSIAN, COUNT_BLOCKS, DOT_FP32,
                DOT_PRECISION, BLOCK_N, HAS_QUERY_MASK=HAS_QUERY_MASK, top_k=top_k, HAS_TOP_K=HAS_TOP_K,
            )  # fmt: skip
    else:
        accumulator, running_max, running_sum, threshold = _forward_memory_loop(
            accumulator, running_max, running_sum, query_key_ptr, memory_key_ptr,
            memory_value_ptr, memory_mask_ptr, centers_ptr, sigma_ptr, block_counter_ptr, b,
            scale, CK, CV, N, M, GRID_W, offs_m, query_valid, offs_ck, in_ck, offs_cv, in_cv,
            SIMILARITY_L2, HAS_MEMORY_MASK, HAS_GAUSSIAN, COUNT_BLOCKS, DOT_FP32, DOT_PRECISION,
            BLOCK_N, HAS_QUERY_MASK=HAS_QUERY_MASK, top_k=top_k, HAS_TOP_K=HAS_TOP_K,
        )  # fmt: skip

    # normalise; a query with no valid memory pixel (running_sum = 0) reads 0
    has_memory = running_sum > 0
    readout = accumulator / tl.where(has_memory, running_sum, 1.0)[:, None]
    readout = tl.where(query_valid[:, None], readout, 0.0)
    tl.store(
        readout_ptr
        + b * CV * _pixel_stride(M)
        + offs_cv[None, :] * _pixel_stride(M)
        + offs_m[:, None],
        readout.to(readout_ptr.dtype.element_ty),
        mask=in_m[:, None] & in_cv[None, :],
    )
    # L = max + log(sum); +∞ where there is no memory, so that backward's exp(S − L) is 0
    logsumexp = tl.where(
        has_memory, running_max + tl.log(tl.where(has_memory, running_sum, 1.0)), float("inf")
    )
    tl.store(logsumexp_ptr + b * M + offs_m, logsumexp, mask=in_m & (value_block == 0))
    if HAS_TOP_K:
        # backward keeps the same logits
        tl.store(threshold_ptr + b * M + offs_m, threshold, mask=in_m & (value_block == 0))


@triton.jit
def _backward_memory_step(
    grad_key,
    grad_logit_sum,
    grad_value,
    key,
    memory_norm,
    center_y,
    center_x,
    sigma,
    query_key_ptr,
    memory_value_ptr,
    grad_readout_ptr,
    logsumexp_ptr,
    delta_ptr,
    b,
    scale,
    CK,
    CV,
    N,
    M,
    GRID_W,
    offs_ck,
    in_ck,
    offs_cv,
    in_cv,
    offs_n,
    memory_valid,
    offs_m,
    query_valid,
    SIMILARITY_L2: tl.constexpr,
    HAS_GAUSSIAN: tl.constexpr,
    COMPUTE_DK: tl.constexpr,
    COMPUTE_DV: tl.constexpr,
    DOT_FP32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_CV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_QUERY_MASK: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
    threshold_ptr,
    HAS_TOP_K: tl.constexpr,
):
    # one (memory block, query block) pair of the dK/dV pass
    query = _load_tile(
        query_key_ptr,
        b,
        CK,
        M,
        offs_ck,
        in_ck,
        offs_m,
        query_valid,
        False,
        DOT_FP32,
        HAS_QUERY_MASK,
    )  # [BLOCK_CK, BLOCK_M]
    # recompute S and P = exp(S − L) for this (memory, query) block pair
    logits = _scaled_logits(
        tl.dot(key, query, input_precision=DOT_PRECISION),
        memory_norm[:, None],
        scale,
        SIMILARITY_L2,
    )  # [BLOCK_N, BLOCK_M]
    if HAS_GAUSSIAN:
        query_y, query_x = _grid_yx(offs_m, GRID_W)
        logits += _log_gaussian(
            query_y[None, :], query_x[None, :], center_y[:, None], center_x[:, None],
            sigma[:, None],
        )  # fmt: skip
    logsumexp = tl.load(logsumexp_ptr + b * M + offs_m, mask=query_valid, other=0.0)
    pair_valid = memory_valid[:, None] & query_valid[None, :]
    if HAS_TOP_K:
        threshold = tl.load(threshold_ptr + b * M + offs_m, mask=query_valid, other=0.0)
        pair_valid = pair_valid & (logits >= threshold[None, :])
    probs = tl.where(pair_valid, tl.exp(logits - logsumexp[None, :]), 0.0)
    if COMPUTE_DV:
        # dV = P · dOᵀ (this program's value channels)
        grad_out = _load_tile(
            grad_readout_ptr,
            b,
            CV,
            M,
            offs_cv,
            in_cv,
            offs_m,
            query_valid,
            True,
            DOT_FP32,
            HAS_QUERY_MASK,
        )  # [BLOCK_M, BLOCK_CV]
        grad_value += tl.dot(probs.to(grad_out.dtype), grad_out, input_precision=DOT_PRECISION)
    if COMPUTE_DK:
        # dP = v · dO over all value channels, then dS = P (dP − Δ)
        grad_probs = _grad_probs(
            grad_readout_ptr, memory_value_ptr, b, CV, M, N, offs_m, query_valid, offs_n,
            memory_valid, True, DOT_FP32, DOT_PRECISION, BLOCK_CV, BLOCK_M, BLOCK_N, HAS_QUERY_MASK=HAS_QUERY_MASK, HAS_MEMORY_MASK=HAS_MEMORY_MASK,
        )  # [BLOCK_N, BLOCK_M]  # fmt: skip
        delta = tl.load(delta_ptr + b * M + offs_m, mask=query_valid, other=0.0)
        grad_logits = probs * (grad_probs - delta[None, :])
        grad_key += tl.dot(
            grad_logits.to(query.dtype), tl.trans(query), input_precision=DOT_PRECISION
        )
        grad_logit_sum += tl.sum(grad_logits, axis=1)
    return grad_key, grad_logit_sum, grad_value


@triton.jit
def _backward_memory_loop(
    grad_key,
    grad_logit_sum,
    grad_value,
    query_key_ptr,
    memory_key_ptr,
    memory_value_ptr,
    query_mask_ptr,
    centers_ptr,
    sigma_ptr,
    grad_readout_ptr,
    logsumexp_ptr,
    delta_ptr,
    b,
    scale,
    CK,
    CV,
    N,
    M,
    GRID_W,
    offs_ck,
    in_ck,
    offs_cv,
    in_cv,
    offs_n,
    memory_valid,
    SIMILARITY_L2: tl.constexpr,
    HAS_QUERY_MASK: tl.constexpr,
    HAS_GAUSSIAN: tl.constexpr,
    COMPUTE_DK: tl.constexpr,
    COMPUTE_DV: tl.constexpr,
    DOT_FP32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_CV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
    threshold_ptr,
    HAS_TOP_K: tl.constexpr,
):
    # a memory block's dK/dV over all query blocks; returns them and the block's keys in fp32
    key = _load_tile(
        memory_key_ptr,
        b,
        CK,
        N,
        offs_ck,
        in_ck,
        offs_n,
        memory_valid,
        True,
        DOT_FP32,
        HAS_MEMORY_MASK,
    )  # [BLOCK_N, BLOCK_CK]
    key_fp32 = key.to(tl.float32)
    memory_norm = tl.sum(key_fp32 * key_fp32, axis=1)
    if HAS_GAUSSIAN:
        center_y, center_x, sigma = _load_gaussian(
            centers_ptr, sigma_ptr, b, N, offs_n, memory_valid
        )
    else:
        center_y = memory_norm  # unused without the Gaussian
        center_x = memory_norm
        sigma = memory_norm
    for start_m in range(0, M, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        query_valid = _load_valid(query_mask_ptr, b, M, offs_m, HAS_QUERY_MASK)
        if HAS_QUERY_MASK:
            if _any_valid(query_valid):
                grad_key, grad_logit_sum, grad_value = _backward_memory_step(
                    grad_key, grad_logit_sum, grad_value, key, memory_norm, center_y, center_x,
                    sigma, query_key_ptr, memory_value_ptr, grad_readout_ptr, logsumexp_ptr,
                    delta_ptr, b, scale, CK, CV, N, M, GRID_W, offs_ck, in_ck, offs_cv, in_cv,
                    offs_n, memory_valid, offs_m, query_valid, SIMILARITY_L2, HAS_GAUSSIAN,
                    COMPUTE_DK, COMPUTE_DV, DOT_FP32, DOT_PRECISION, BLOCK_CV, BLOCK_M, BLOCK_N, HAS_QUERY_MASK=HAS_QUERY_MASK, HAS_MEMORY_MASK=HAS_MEMORY_MASK, threshold_ptr=threshold_ptr, HAS_TOP_K=HAS_TOP_K,
                )  # fmt: skip
        else:
            # no mask, no branch: the loop's loads can be software-pipelined
            grad_key, grad_logit_sum, grad_value = _backward_memory_step(
                grad_key, grad_logit_sum, grad_value, key, memory_norm, center_y, center_x,
                sigma, query_key_ptr, memory_value_ptr, grad_readout_ptr, logsumexp_ptr,
                delta_ptr, b, scale, CK, CV, N, M, GRID_W, offs_ck, in_ck, offs_cv, in_cv,
                offs_n, memory_valid, offs_m, query_valid, SIMILARITY_L2, HAS_GAUSSIAN,
                COMPUTE_DK, COMPUTE_DV, DOT_FP32, DOT_PRECISION, BLOCK_CV, BLOCK_M, BLOCK_N, HAS_QUERY_MASK=HAS_QUERY_MASK, HAS_MEMORY_MASK=HAS_MEMORY_MASK, threshold_ptr=threshold_ptr, HAS_TOP_K=HAS_TOP_K,
            )  # fmt: skip
    return grad_key, grad_logit_sum, grad_value, key_fp32


@triton.jit
def _backward_query_step(
    grad_query,
    query,
    query_y,
    query_x,
    logsumexp,
    delta,
    memory_key_ptr,
    memory_value_ptr,
    centers_ptr,
    sigma_ptr,
    grad_readout_ptr,
    b,
    scale,
    CK,
    CV,
    N,
    M,
    offs_ck,
    in_ck,
    offs_m,
    query_valid,
    offs_n,
    memory_valid,
    SIMILARITY_L2: tl.constexpr,
    HAS_GAUSSIAN: tl.constexpr,
    DOT_FP32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_CV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_QUERY_MASK: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
    threshold,
    HAS_TOP_K: tl.constexpr,
):
    # one (query block, memory block) pair of the dQ pass: recompute S and P = exp(S − L)
    key, logits = _query_block_logits(
        query, query_y, query_x, memory_key_ptr, centers_ptr, sigma_ptr, b, scale, CK, N,
        offs_ck, in_ck, offs_n, memory_valid, SIMILARITY_L2, HAS_GAUSSIAN, DOT_FP32,
        DOT_PRECISION, HAS_MEMORY_MASK=HAS_MEMORY_MASK,
    )  # [BLOCK_M, BLOCK_N]  # fmt: skip
    pair_valid = query_valid[:, None] & memory_valid[None, :]
    if HAS_TOP_K:
        pair_valid = pair_valid & (logits >= threshold[:, None])
    probs = tl.where(pair_valid, tl.exp(logits - logsumexp[:, None]), 0.0)
    # dP = dO · v over all value channels, then dS = P (dP − Δ)
    grad_probs = _grad_probs(
        grad_readout_ptr, memory_value_ptr, b, CV, M, N, offs_m, query_valid, offs_n,
        memory_valid, False, DOT_FP32, DOT_PRECISION, BLOCK_CV, BLOCK_M, BLOCK_N, HAS_QUERY_MASK=HAS_QUERY_MASK, HAS_MEMORY_MASK=HAS_MEMORY_MASK,
    )  # [BLOCK_M, BLOCK_N]  # fmt: skip
    grad_logits = probs * (grad_probs - delta[:, None])
    grad_query += tl.dot(grad_logits.to(key.dtype), tl.trans(key), input_precision=DOT_PRECISION)
    return grad_query


@triton.jit
def _backward_query_loop(
    grad_query,
    query_key_ptr,
    memory_key_ptr,
    memory_value_ptr,
    memory_mask_ptr,
    centers_ptr,
    sigma_ptr,
    grad_readout_ptr,
    logsumexp_ptr,
    delta_ptr,
    b,
    scale,
    CK,
    CV,
    N,
    M,
    GRID_W,
    offs_ck,
    in_ck,
    offs_m,
    query_valid,
    SIMILARITY_L2: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
    HAS_GAUSSIAN: tl.constexpr,
    DOT_FP32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_CV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_QUERY_MASK: tl.constexpr,
    threshold_ptr,
    HAS_TOP_K: tl.constexpr,
):
    # a query block's dQ (Σ_n dS k_n, unscaled) over all memory blocks
    query = _load_tile(
        query_key_ptr, b, CK, M, offs_ck, in_ck, offs_m, query_valid, True, DOT_FP32, HAS_QUERY_MASK
    )  # [BLOCK_M, BLOCK_CK]
    query_y, query_x = _grid_yx(offs_m, GRID_W)
    logsumexp = tl.load(logsumexp_ptr + b * M + offs_m, mask=query_valid, other=0.0)
    delta = tl.load(delta_ptr + b * M + offs_m, mask=query_valid, other=0.0)
    threshold = delta  # unused without top-k
    if HAS_TOP_K:
        threshold = tl.load(threshold_ptr + b * M + offs_m, mask=query_valid, other=0.0)
    for start_n in range(0, N, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        memory_valid = _load_valid(memory_mask_ptr, b, N, offs_n, HAS_MEMORY_MASK)
        if HAS_MEMORY_MASK:
            if _any_valid(memory_valid):
                grad_query = _backward_query_step(
                    grad_query, query, query_y, query_x, logsumexp, delta, memory_key_ptr,
                    memory_value_ptr, centers_ptr, sigma_ptr, grad_readout_ptr, b, scale, CK, CV,
                    N, M, offs_ck, in_ck, offs_m, query_valid, offs_n, memory_valid,
                    SIMILARITY_L2, HAS_GAUSSIAN, DOT_FP32, DOT_PRECISION, BLOCK_CV, BLOCK_M,
                    BLOCK_N, HAS_QUERY_MASK=HAS_QUERY_MASK, HAS_MEMORY_MASK=HAS_MEMORY_MASK, threshold=threshold, HAS_TOP_K=HAS_TOP_K,
                )  # fmt: skip
        else:
            # no mask, no branch: the loop's loads can be software-pipelined
            grad_query = _backward_query_step(
                grad_query, query, query_y, query_x, logsumexp, delta, memory_key_ptr,
                memory_value_ptr, centers_ptr, sigma_ptr, grad_readout_ptr, b, scale, CK, CV, N,
                M, offs_ck, in_ck, offs_m, query_valid, offs_n, memory_valid, SIMILARITY_L2,
                HAS_GAUSSIAN, DOT_FP32, DOT_PRECISION, BLOCK_CV, BLOCK_M, BLOCK_N, HAS_QUERY_MASK=HAS_QUERY_MASK, HAS_MEMORY_MASK=HAS_MEMORY_MASK, threshold=threshold, HAS_TOP_K=HAS_TOP_K,
            )  # fmt: skip
    return grad_query


@triton.autotune(
    configs=_backward_configs(),
    key=_TUNING_KEY + ["COMPUTE_DK", "COMPUTE_DV"],
    prune_configs_by={"early_config_prune": _prune_backward_configs},
)
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
    B_BUCKET,
    SIMILARITY_L2: tl.constexpr,
    HAS_QUERY_MASK: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
    HAS_GAUSSIAN: tl.constexpr,
    COMPUTE_DK: tl.constexpr,
    COMPUTE_DV: tl.constexpr,
    DOT_FP32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_CK: tl.constexpr,
    BLOCK_CV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    threshold_ptr,
    HAS_TOP_K: tl.constexpr,
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
    if HAS_MEMORY_MASK:
        # skipped memory blocks get zero gradients, nothing loaded
        if _any_valid(memory_valid):
            grad_key, grad_logit_sum, grad_value, key_fp32 = _backward_memory_loop(
                grad_key, grad_logit_sum, grad_value, query_key_ptr, memory_key_ptr,
                memory_value_ptr, query_mask_ptr, centers_ptr, sigma_ptr, grad_readout_ptr,
                logsumexp_ptr, delta_ptr, b, scale, CK, CV, N, M, GRID_W, offs_ck, in_ck, offs_cv,
                in_cv, offs_n, memory_valid, SIMILARITY_L2, HAS_QUERY_MASK, HAS_GAUSSIAN,
                COMPUTE_DK, COMPUTE_DV, DOT_FP32, DOT_PRECISION, BLOCK_CV, BLOCK_M, BLOCK_N, HAS_MEMORY_MASK=HAS_MEMORY_MASK, threshold_ptr=threshold_ptr, HAS_TOP_K=HAS_TOP_K,
            )  # fmt: skip
    else:
        grad_key, grad_logit_sum, grad_value, key_fp32 = _backward_memory_loop(
            grad_key, grad_logit_sum, grad_value, query_key_ptr, memory_key_ptr,
            memory_value_ptr, query_mask_ptr, centers_ptr, sigma_ptr, grad_readout_ptr,
            logsumexp_ptr, delta_ptr, b, scale, CK, CV, N, M, GRID_W, offs_ck, in_ck, offs_cv,
            in_cv, offs_n, memory_valid, SIMILARITY_L2, HAS_QUERY_MASK, HAS_GAUSSIAN, COMPUTE_DK,
            COMPUTE_DV, DOT_FP32, DOT_PRECISION, BLOCK_CV, BLOCK_M, BLOCK_N, HAS_MEMORY_MASK=HAS_MEMORY_MASK, threshold_ptr=threshold_ptr, HAS_TOP_K=HAS_TOP_K,
        )  # fmt: skip

    if COMPUTE_DV:
        tl.store(
            grad_memory_value_ptr
            + b * CV * _pixel_stride(N)
            + offs_cv[None, :] * _pixel_stride(N)
            + offs_n[:, None],
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
            grad_memory_key_ptr
            + b * CK * _pixel_stride(N)
            + offs_ck[None, :] * _pixel_stride(N)
            + offs_n[:, None],
            grad_key.to(grad_memory_key_ptr.dtype.element_ty),
            mask=in_n[:, None] & in_ck[None, :],
        )


@triton.autotune(
    configs=_backward_configs(),
    key=_TUNING_KEY,
    prune_configs_by={"early_config_prune": _prune_backward_configs},
)
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
    B_BUCKET,
    SIMILARITY_L2: tl.constexpr,
    HAS_QUERY_MASK: tl.constexpr,
    HAS_MEMORY_MASK: tl.constexpr,
    HAS_GAUSSIAN: tl.constexpr,
    DOT_FP32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_CK: tl.constexpr,
    BLOCK_CV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    threshold_ptr,
    HAS_TOP_K: tl.constexpr,
):
    query_block = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_m = query_block * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_ck = tl.arange(0, BLOCK_CK)
    in_m = offs_m < M
    in_ck = offs_ck < CK

    query_valid = _load_valid(query_mask_ptr, b, M, offs_m, HAS_QUERY_MASK)

    grad_query = tl.zeros([BLOCK_M, BLOCK_CK], dtype=tl.float32)  # Σ_n dS k_n
    if HAS_QUERY_MASK:
        if _any_valid(query_valid):
            grad_query = _backward_query_loop(
                grad_query, query_key_ptr, memory_key_ptr, memory_value_ptr, memory_mask_ptr,
                centers_ptr, sigma_ptr, grad_readout_ptr, logsumexp_ptr, delta_ptr, b, scale, CK,
                CV, N, M, GRID_W, offs_ck, in_ck, offs_m, query_valid, SIMILARITY_L2,
                HAS_MEMORY_MASK, HAS_GAUSSIAN, DOT_FP32, DOT_PRECISION, BLOCK_CV, BLOCK_M, BLOCK_N, HAS_QUERY_MASK=HAS_QUERY_MASK, threshold_ptr=threshold_ptr, HAS_TOP_K=HAS_TOP_K,
            )  # fmt: skip
    else:
        grad_query = _backward_query_loop(
            grad_query, query_key_ptr, memory_key_ptr, memory_value_ptr, memory_mask_ptr,
            centers_ptr, sigma_ptr, grad_readout_ptr, logsumexp_ptr, delta_ptr, b, scale, CK, CV,
            N, M, GRID_W, offs_ck, in_ck, offs_m, query_valid, SIMILARITY_L2, HAS_MEMORY_MASK,
            HAS_GAUSSIAN, DOT_FP32, DOT_PRECISION, BLOCK_CV, BLOCK_M, BLOCK_N, HAS_QUERY_MASK=HAS_QUERY_MASK, threshold_ptr=threshold_ptr, HAS_TOP_K=HAS_TOP_K,
        )  # fmt: skip

    # dot: dQ = scale Σ dS k ; l2: dQ = 2 scale Σ dS k
    grad_query = grad_query * scale
    if SIMILARITY_L2:
        grad_query = 2.0 * grad_query
    tl.store(
        grad_query_key_ptr
        + b * CK * _pixel_stride(M)
        + offs_ck[None, :] * _pixel_stride(M)
        + offs_m[:, None],
        grad_query.to(grad_query_key_ptr.dtype.element_ty),
        mask=in_m[:, None] & in_ck[None, :],
    )


_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def tf32_allowed() -> bool:
    """Whether PyTorch lets CUDA fp32 matmuls use TF32 (``torch.set_float32_matmul_precision``
    "high"/"medium", ``torch.backends.cuda.matmul.allow_tf32`` or its ``fp32_precision``):
    the kernels follow it. Read through ``fp32_precision``, which answers whichever of the
    legacy and new APIs set it ("none" until one does)."""
    return torch.backends.cuda.matmul.fp32_precision == "tf32"


def dot_precision(dtype: torch.dtype, device: torch.device, tf32: bool | None = None) -> str:
    """``input_precision`` of the kernels' fp32 ``tl.dot``: "tf32" (tensor cores, 10-bit
    mantissa inputs) when TF32 is allowed on a CUDA device, else "ieee" (FMA units). fp16 and
    bf16 tiles go to the tensor cores either way. ``tf32=None`` asks PyTorch; the interpreter
    always computes in IEEE fp32."""
    if dtype != torch.float32 or _interpreting():
        return "ieee"
    if tf32 is None:
        tf32 = device.type == "cuda" and tf32_allowed()
    return "tf32" if tf32 else "ieee"


def padded_pixels(pixels: int) -> int:
    """The row length the kernels address a ``[B, C, pixels]`` tensor with (`_pixel_stride`)."""
    alignment = PIXEL_ALIGNMENT.value
    return -(-int(pixels) // alignment) * alignment


def pad_pixels(x: Tensor) -> Tensor:
    """``x [B, C, P]`` laid out as the kernels read it: channel rows ``padded_pixels(P)`` apart.

    Returns ``x`` itself when it is contiguous and P a multiple of 16, else a copy into a
    zero-filled padded buffer, returned as that buffer's ``[..., :P]`` view: the kernels load
    whole padded rows when there is no mask and rely on the padding being zeros.
    """
    batch, channels, pixels = x.shape
    stride = padded_pixels(pixels)
    if pixels == stride and x.is_contiguous():
        return x
    out = x.new_zeros(batch, channels, stride)[..., :pixels]
    out.copy_(x)
    return out


def empty_padded(batch: int, channels: int, pixels: int, **options) -> Tensor:
    """An uninitialised ``[B, C, P]`` in the kernels' padded layout (a view of its buffer)."""
    return torch.empty(batch, channels, padded_pixels(pixels), **options)[..., :pixels]


def max_top_k(dtype: torch.dtype, device: torch.device) -> int:
    """The largest ``top_k`` the forward kernel runs for these inputs: its running top-k is one
    memory block wide (BLOCK_N of the configs its tuner may pick)."""
    constants = {
        "DOT_FP32": dtype == torch.float32,
        "DOT_PRECISION": dot_precision(dtype, device),
    }
    configs = _memory_read_forward_kernel.configs
    if not _interpreting():
        configs = [c for c in configs if getattr(c, "fma", False) == _uses_fma(constants)]
    return max(c.kwargs["BLOCK_N"] for c in configs)


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
        tf32: bool | None = None,
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
            DOT_PRECISION=dot_precision(dtype, device, tf32),
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
            _bucket(self.batch),
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
        top_k: int | None,
    ) -> Tensor:
        query_key = pad_pixels(query_key)
        memory_key = pad_pixels(memory_key)
        memory_value = pad_pixels(memory_value)
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
        readout = empty_padded(
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
        # STCN's truncated softmax in the kernel; top_k >= N is the full softmax
        has_top_k = top_k is not None and top_k < launch.memories
        threshold = torch.empty(
            launch.batch if has_top_k else 1,
            launch.queries if has_top_k else 1,
            device=query_key.device,
            dtype=torch.float32,
        )

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
            threshold_ptr=threshold,
            top_k=int(top_k) if has_top_k else 0,
            HAS_TOP_K=has_top_k,
            **launch.constants,
        )
        ctx.launch = launch
        ctx.top_k = (threshold, has_top_k)
        # the fp32 readout is kept for backward's Δ = Σ dO·O (rounding O first costs accuracy)
        ctx.save_for_backward(query_key, memory_key, memory_value, readout, logsumexp)
        return readout.to(memory_value.dtype)

    @staticmethod
    def backward(ctx, grad_readout: Tensor):
        query_key, memory_key, memory_value, readout, logsumexp = ctx.saved_tensors
        launch: _Launch = ctx.launch
        threshold, has_top_k = ctx.top_k
        grad_readout = pad_pixels(grad_readout)
        # Δ_m = Σ_c dO[c, m]·O[c, m] (the softmax backward's row term); O is 0 at masked queries
        delta = (grad_readout.float() * readout.float()).sum(dim=1).contiguous()
        # the interpreter truncates fp32 -> bf16 on store (no rounding): store fp32 there
        grad_dtype = torch.float32 if launch.store_fp32 else query_key.dtype
        device = query_key.device
        grad_query_key = empty_padded(*query_key.shape, device=device, dtype=grad_dtype)
        grad_memory_key = empty_padded(*memory_key.shape, device=device, dtype=grad_dtype)
        grad_memory_value = empty_padded(*memory_value.shape, device=device, dtype=grad_dtype)
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
                    threshold_ptr=threshold,
                    HAS_TOP_K=has_top_k,
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
                threshold_ptr=threshold,
                HAS_TOP_K=has_top_k,
                **launch.constants,
            )
        return (
            grad_query_key.to(query_key.dtype) if needs_query else None,
            grad_memory_key.to(memory_key.dtype) if needs_key else None,
            grad_memory_value.to(memory_value.dtype) if needs_value else None,
            *([None] * 9),
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
    top_k: int | None = None,
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
        top_k,
    )
