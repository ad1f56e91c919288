"""Triton kernels of `vos.ops.gather_read`: forward and backward of the gathered memory read.

Equations (see `vos.ops.gather_read` for the conventions: −1 = no candidate, duplicates are
separate candidates):

    S[r, k]    = (q_r · k_{index[k]}) · scale        "dot"
               = (2 q_r · k_{index[k]} − ‖k‖²) · scale   "l2"
    P[r, k]    = softmax_k(S[r, k])                    (online over blocks of K)
    readout_r  = Σ_k P[r, k] · v_{index[k]}

Backward (recomputing S and P from the saved log-sum-exp, as flash-attention does):

    dP[r, k] = dO_r · v_k,   D_r = dO_r · O_r,   dS = P ⊙ (dP − D)
    dq_r     = scale · Σ_k dS[r, k] k_k                     (×2 for "l2")
    dk_n    += scale · Σ_{(r, k): index = n} dS[r, k] q_r    ("l2": 2 dS q − 2 dS k)
    dv_n    += Σ_{(r, k): index = n} P[r, k] dO_r

The backward has two passes and no atomic add, so its gradients are deterministic:

1. query side (one program per block of query rows): P and dS per (row, candidate), stored
   to ``[B, G, g, K]`` fp32 buffers, and dq;
2. memory side (one program per block of memory pixels and channels, one launch for dk and one
   for dv): the (row, candidate) pairs sorted by the memory pixel they read (a stable sort,
   `pairs_by_memory_pixel`, with each pixel's run as CSR offsets) are summed per pixel in that
   fixed order. A pixel read by many rows runs a longer loop than its neighbours (the block
   waits for its longest run).

The pair buffers cost 8 bytes per (query pixel, candidate): 6.6 MB for HMMN's res3 read at
480p (1620 groups × 4 pixels × 128 candidates), where atomic adds needed none.

Layout. Memory is passed pixel-major (``[B, N, C]``, a transposed copy made by the wrapper) so
one candidate's channels are contiguous. Queries are seen as ``[B, Ck, G, g]`` (the plain form
is ``g = 1``). Two pairs of kernels:

- plain (``[B, Ck, M]`` queries): a program owns ``BLOCK_M`` query pixels, each with its own
  index row, so the candidate tiles are ``[BLOCK_M, BLOCK_K, C]`` and S and P·V are
  broadcast products summed on the FMA units;
- grouped (``g`` pixels sharing each index row: HMMN's 2×2 res3 and 4×4 res2 cells): a
  program owns one group, its pixels the rows of ``[BLOCK_M, C]`` tiles (``BLOCK_M`` = the
  next power of two ≥ g, 16 at least), and each block of shared candidates is two matrix
  products on the tensor cores, S = Q Kᵀ and acc += P V (the backward: dP = dO Vᵀ and
  dq += dS K), as flash attention does. fp16/bf16 tiles go to the tensor cores as they are
  (P and dS take the values' and keys' dtype there); fp32 ones on TF32 when PyTorch allows it.
  A group of 4 fills 4 of the 16 rows: the tensor cores still do its products in fewer
  instructions than the FMA units, and no tile is three-dimensional.

The forward splits the value channels over the grid (``BLOCK_CV``), recomputing the logits
per split; the backward loops over value blocks inside (dP needs all of Cv). Accumulation is
fp32 whatever the input dtype (fp32/fp16/bf16); outputs are written in fp32 and cast by
the wrapper, and the fp32 readout is kept for the backward's D so half-precision gradients
do not inherit the output's rounding.
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable
from vos.kernels.contracts import gather_read_kernel_unsupported_reason, validate_gather_read
from vos.kernels.memory_read import dot_precision

_INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# Configs that spilled registers at the papers' sizes (`vos.bench kernels`' gather_read cases,
# HMMN's res3 and res2 reads) on sm_80 or sm_90: the tuner never tries them. Plain kernels:
# (BLOCK_K, BLOCK_CV, BLOCK_M, warps), measured in fp32, fp16 and bf16 with `python -m
# vos.bench kernels --target sm_80 sm_90 --dtypes fp32 fp16 bf16 --kernels gather_read`.
# Grouped kernels: (BLOCK_K, BLOCK_CV, warps) per kind of product, as their compiled code
# differs: "ieee" (fp32 products on the FMA units), "tf32" (fp32 on TF32 tensor cores) and
# "half" (fp16/bf16), measured with `--dtypes fp32 fp32-tf32 fp16 bf16 --kernels
# gather_read.fwd/grouped gather_read.bwd/grouped` (docs/benchmarks.md).
_SPILLED = {
    ("fwd", "plain"): {(16, 64, 16, 8), (16, 64, 8, 4), (32, 64, 8, 8), (8, 64, 16, 4),
                       (8, 64, 4, 8)},
    ("bwd", "plain"): {(16, 32, 16, 8), (16, 32, 8, 4), (16, 64, 16, 8), (16, 64, 8, 4),
                       (32, 32, 8, 8), (32, 64, 4, 4), (32, 64, 8, 8), (8, 32, 16, 4),
                       (8, 64, 16, 4), (8, 64, 16, 8)},
    ("fwd", "ieee"): {(32, 64, 4), (32, 128, 4), (64, 64, 4), (64, 64, 8), (64, 128, 4),
                      (64, 128, 8)},
    ("fwd", "tf32"): set(),
    ("fwd", "half"): set(),
    ("bwd", "ieee"): {(16, 64, 4), (16, 128, 4), (16, 128, 8), (32, 64, 4), (32, 128, 4),
                      (32, 128, 8), (64, 64, 4), (64, 64, 8), (64, 128, 4), (64, 128, 8)},
    ("bwd", "tf32"): {(16, 64, 8), (16, 128, 4), (32, 64, 4), (32, 128, 4), (64, 64, 4),
                      (64, 128, 4)},
    ("bwd", "half"): {(32, 128, 4), (64, 64, 8)},
}  # fmt: skip


def _configs(plain: bool, backward: bool) -> list[triton.Config]:
    """Autotune configs; one small config under the interpreter (several need a GPU driver).
    Grouped configs have no BLOCK_M: the wrapper sets it from the group size."""
    if _INTERPRETING:
        # small blocks so the tiny test shapes still cross block boundaries (tl.dot's tiles
        # are 16 wide at least)
        blocks = (
            {"BLOCK_K": 8, "BLOCK_CV": 8, "BLOCK_M": 4}
            if plain
            else {"BLOCK_K": 16, "BLOCK_CV": 16}
        )
        return [triton.Config(blocks, num_warps=1, num_stages=1)]
    if plain:
        spilled = _SPILLED[("bwd" if backward else "fwd", "plain")]
        shapes = [(m, k, cv) for m in (4, 8, 16) for k in (8, 16, 32) for cv in (32, 64)]
    else:
        spilled = set()  # by kind of product, in `prune_configs`
        shapes = [(None, k, cv) for k in (16, 32, 64) for cv in (64, 128)]
    configs = []
    for block_m, block_k, block_cv in shapes:
        for num_warps in (4, 8):
            if (block_k, block_cv, block_m, num_warps) in spilled:
                continue
            blocks = {"BLOCK_K": block_k, "BLOCK_CV": block_cv}
            if block_m is not None:
                blocks["BLOCK_M"] = block_m
            configs.append(triton.Config(blocks, num_warps=num_warps, num_stages=2))
    return configs


_AUTOTUNE_KEY = ["candidates", "key_channels", "value_channels", "group_size"]
# grouped: TF32 or IEEE fp32 products (PyTorch's switch) compile differently, so tune apart
_GROUPED_AUTOTUNE_KEY = [*_AUTOTUNE_KEY, "DOT_PRECISION"]
# fp32 elements per thread that one [rows, BLOCK_K, channels] tile may take in registers
_TILE_ELEMENTS_PER_THREAD = 64


def product_kind(key_dtype: torch.dtype, constants: dict) -> str:
    """ "ieee", "tf32" or "half": how a grouped launch's products compile (`_SPILLED`)."""
    if key_dtype == torch.float32 or constants.get("DOT_FP32"):
        return "tf32" if constants.get("DOT_PRECISION") == "tf32" else "ieee"
    return "half"


def _grouped_shape(config: triton.Config) -> tuple[int, int, int]:
    return config.kwargs["BLOCK_K"], config.kwargs["BLOCK_CV"], config.num_warps


def prune_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drop configs that spilled at the papers' sizes (grouped: for this kind of product),
    and those whose tiles would spill registers or overshoot Cv.

    Plain: the candidate tile is [BLOCK_M, BLOCK_K, max(BLOCK_CK, BLOCK_CV)] fp32. Grouped
    (BLOCK_M, the group's, passed in ``kwargs``): the largest 2-D tile of the matrix
    products, [max(BLOCK_K, BLOCK_M), max(BLOCK_CK, BLOCK_CV)]. Keeps the smallest tile if
    none fits.
    """
    value_block_cap = triton.next_power_of_2(named_args["value_channels"])
    grouped = "BLOCK_M" in kwargs
    if grouped:
        part = "bwd" if "delta_ptr" in named_args else "fwd"
        spilled = _SPILLED[(part, product_kind(named_args["memory_key_ptr"].dtype, kwargs))]
        configs = [c for c in configs if _grouped_shape(c) not in spilled] or configs

    def tile(config: triton.Config) -> int:
        channels = max(kwargs["BLOCK_CK"], config.kwargs["BLOCK_CV"])
        if grouped:
            return max(config.kwargs["BLOCK_K"], kwargs["BLOCK_M"]) * channels
        return config.kwargs["BLOCK_M"] * config.kwargs["BLOCK_K"] * channels

    smallest_cv = min(c.kwargs["BLOCK_CV"] for c in configs)
    kept = [
        c
        for c in configs
        if tile(c) <= _TILE_ELEMENTS_PER_THREAD * 32 * c.num_warps
        and c.kwargs["BLOCK_CV"] <= max(value_block_cap, smallest_cv)
    ]
    return kept or [min(configs, key=lambda c: (tile(c), c.num_warps))]


@triton.jit
def _query_rows(pid_rows, groups, BLOCK_M: tl.constexpr):
    """The plain form's rows: ``BLOCK_M`` query pixels (groups of one), each with its own index
    row. Returns (group, pixel) coordinates, validity, and index rows."""
    row_group = pid_rows * BLOCK_M + tl.arange(0, BLOCK_M)
    row_pixel = tl.zeros([BLOCK_M], tl.int32)
    return row_group, row_pixel, row_group < groups, row_group


@triton.jit
def _load_candidates(
    index_base, index_row, groups, candidates, k_start, stride_ig, stride_ik, BLOCK_K: tl.constexpr
):
    """Candidate memory pixels ``[rows, BLOCK_K]`` (−1 and padding → slot 0, valid=False)."""
    offs_k = k_start + tl.arange(0, BLOCK_K)
    in_range = (index_row < groups)[:, None] & (offs_k < candidates)[None, :]
    index_ptrs = (
        index_base + index_row[:, None].to(tl.int64) * stride_ig + offs_k[None, :] * stride_ik
    )
    index = tl.load(index_ptrs, mask=in_range, other=-1).to(tl.int64)
    valid = index >= 0
    return tl.where(valid, index, 0), valid


@triton.jit
def _logits(query, keys, valid, scale, L2: tl.constexpr):
    """S = q·k·scale ("dot") or (2 q·k − ‖k‖²)·scale ("l2"); −inf for missing candidates."""
    logits = tl.sum(query[:, None, :] * keys, axis=2)
    if L2:
        logits = 2.0 * logits - tl.sum(keys * keys, axis=2)
    logits = logits * scale
    return tl.where(valid, logits, float("-inf"))


@triton.jit
def _row_offsets(batch, offs_c, row_group, row_pixel, stride_b, stride_c, stride_g, stride_p):
    """Offsets ``[rows, channels]`` of the rows' channels in a ``[B, C, G, g]`` tensor."""
    return (
        batch * stride_b + offs_c[None, :] * stride_c
        + row_group[:, None] * stride_g + row_pixel[:, None] * stride_p
    )  # fmt: skip


@triton.jit
def _load_candidate_tile(base, candidate, valid, offs_c, c_in, stride_n, stride_c):
    """Candidates' channels ``[rows, BLOCK_K, channels]`` (fp32) of pixel-major memory."""
    offsets = candidate[:, :, None] * stride_n + offs_c[None, None, :] * stride_c
    mask = valid[:, :, None] & c_in[None, None, :]
    return tl.load(base + offsets, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _online_softmax_step(logits, running_max, normaliser):
    """One block of the online softmax over candidates: the new running max m, the factor
    exp(m_old − m_new) that rescales what was accumulated, the block's weights exp(S − m_new)
    and the updated normaliser l = Σ exp(S − m)."""
    new_max = tl.maximum(running_max, tl.max(logits, axis=1))
    shift = tl.where(new_max == float("-inf"), 0.0, new_max)  # no candidate seen yet
    rescale = tl.exp(running_max - shift)
    weights = tl.exp(logits - shift[:, None])
    return new_max, rescale, weights, normaliser * rescale + tl.sum(weights, axis=1)


@triton.jit
def _store_readout_and_lse(
    readout_ptrs, readout_mask, lse_ptrs, lse_mask, acc, normaliser, running_max
):
    """readout = acc / l (a row with no candidate reads 0) and the log-sum-exp the backward
    recomputes P from (−inf for a row with no candidate)."""
    has_candidate = normaliser > 0
    readout = acc / tl.where(has_candidate, normaliser, 1.0)[:, None]
    tl.store(readout_ptrs, readout, mask=readout_mask)
    lse = tl.where(
        has_candidate, running_max + tl.log(tl.where(has_candidate, normaliser, 1.0)), float("-inf")
    )
    tl.store(lse_ptrs, lse, mask=lse_mask)


@triton.jit
def _row_statistics(lse_ptr, delta_ptr, row_offsets, row_valid):
    """The backward's per-row lse (0 for a row with no candidate: every P is 0) and D."""
    lse = tl.load(lse_ptr + row_offsets, mask=row_valid, other=0.0)
    lse = tl.where(lse == float("-inf"), 0.0, lse)
    delta = tl.load(delta_ptr + row_offsets, mask=row_valid, other=0.0)
    return lse, delta


@triton.jit
def _store_pairs(
    probs_ptr, logits_grad_ptr, batch, groups, group_size, candidates, row_group, row_pixel,
    row_valid, offs_k, weights, logits_grad,
):  # fmt: skip
    """P and dS per (row, candidate) into the contiguous [B, G, g, K] buffers the memory-side
    pass sums per memory pixel."""
    pair_offsets = ((batch * groups + row_group[:, None]) * group_size
                    + row_pixel[:, None]) * candidates + offs_k[None, :]  # fmt: skip
    pair_mask = row_valid[:, None] & (offs_k < candidates)[None, :]
    tl.store(probs_ptr + pair_offsets, weights, mask=pair_mask)
    tl.store(logits_grad_ptr + pair_offsets, logits_grad, mask=pair_mask)


@triton.jit
def _gather_read_fwd_kernel(
    query_ptr, memory_key_ptr, memory_value_ptr, index_ptr, readout_ptr, lse_ptr,
    scale, groups, group_size, candidates, key_channels, value_channels,
    stride_qb, stride_qc, stride_qg, stride_qp,
    stride_kb, stride_kn, stride_kc,
    stride_vb, stride_vn, stride_vc,
    stride_ib, stride_ig, stride_ik,
    stride_ob, stride_oc, stride_og, stride_op,
    stride_lb, stride_lg, stride_lp,
    L2: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_CK: tl.constexpr, BLOCK_CV: tl.constexpr,
):  # fmt: skip
    pid_rows = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    pid_cv = tl.program_id(2)
    row_group, row_pixel, row_valid, index_row = _query_rows(pid_rows, groups, BLOCK_M)
    offs_ck = tl.arange(0, BLOCK_CK)
    ck_in = offs_ck < key_channels
    offs_cv = pid_cv * BLOCK_CV + tl.arange(0, BLOCK_CV)
    cv_in = offs_cv < value_channels

    query_offsets = _row_offsets(
        batch, offs_ck, row_group, row_pixel, stride_qb, stride_qc, stride_qg, stride_qp
    )
    query = tl.load(query_ptr + query_offsets, mask=row_valid[:, None] & ck_in[None, :], other=0.0)
    query = query.to(tl.float32)
    key_base = memory_key_ptr + batch * stride_kb
    value_base = memory_value_ptr + batch * stride_vb
    index_base = index_ptr + batch * stride_ib

    # online softmax state: running max m, normaliser l = Σ exp(S − m), acc = Σ exp(S − m) v
    running_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    normaliser = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_CV], tl.float32)
    for k_start in range(0, candidates, BLOCK_K):
        candidate, valid = _load_candidates(
            index_base, index_row, groups, candidates, k_start, stride_ig, stride_ik, BLOCK_K
        )
        keys = _load_candidate_tile(
            key_base, candidate, valid, offs_ck, ck_in, stride_kn, stride_kc
        )
        logits = _logits(query, keys, valid, scale, L2)

        # w = softmax_k(S), accumulated block by block with rescaling by exp(m_old − m_new)
        new_max, rescale, weights, normaliser = _online_softmax_step(
            logits, running_max, normaliser
        )

        # readout += Σ_k w_k v_k
        values = _load_candidate_tile(
            value_base, candidate, valid, offs_cv, cv_in, stride_vn, stride_vc
        )
        acc = acc * rescale[:, None] + tl.sum(weights[:, :, None] * values, axis=1)
        running_max = new_max

    readout_offsets = _row_offsets(
        batch, offs_cv, row_group, row_pixel, stride_ob, stride_oc, stride_og, stride_op
    )
    lse_ptrs = lse_ptr + batch * stride_lb + row_group * stride_lg + row_pixel * stride_lp
    # one value-channel split writes the log-sum-exp
    _store_readout_and_lse(
        readout_ptr + readout_offsets, row_valid[:, None] & cv_in[None, :],
        lse_ptrs, row_valid & (pid_cv == 0), acc, normaliser, running_max,
    )  # fmt: skip


@triton.jit
def _gather_read_bwd_kernel(
    query_ptr, memory_key_ptr, memory_value_ptr, index_ptr, grad_readout_ptr, lse_ptr, delta_ptr,
    query_grad_ptr, probs_ptr, logits_grad_ptr,
    scale, groups, group_size, candidates, key_channels, value_channels,
    stride_qb, stride_qc, stride_qg, stride_qp,
    stride_kb, stride_kn, stride_kc,
    stride_vb, stride_vn, stride_vc,
    stride_ib, stride_ig, stride_ik,
    stride_ob, stride_oc, stride_og, stride_op,
    stride_lb, stride_lg, stride_lp,
    L2: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_CK: tl.constexpr, BLOCK_CV: tl.constexpr,
):  # fmt: skip
    # query_grad shares the query's strides, grad_readout the readout's, lse and delta one
    # layout; probs and logits_grad are contiguous [B, G, g, K]
    pid_rows = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    row_group, row_pixel, row_valid, index_row = _query_rows(pid_rows, groups, BLOCK_M)
    offs_ck = tl.arange(0, BLOCK_CK)
    ck_in = offs_ck < key_channels

    query_offsets = _row_offsets(
        batch, offs_ck, row_group, row_pixel, stride_qb, stride_qc, stride_qg, stride_qp
    )
    query_mask = row_valid[:, None] & ck_in[None, :]
    query = tl.load(query_ptr + query_offsets, mask=query_mask, other=0.0).to(tl.float32)
    row_offsets = batch * stride_lb + row_group * stride_lg + row_pixel * stride_lp
    lse, delta = _row_statistics(lse_ptr, delta_ptr, row_offsets, row_valid)
    key_base = memory_key_ptr + batch * stride_kb
    value_base = memory_value_ptr + batch * stride_vb
    index_base = index_ptr + batch * stride_ib

    query_grad = tl.zeros([BLOCK_M, BLOCK_CK], tl.float32)
    for k_start in range(0, candidates, BLOCK_K):
        candidate, valid = _load_candidates(
            index_base, index_row, groups, candidates, k_start, stride_ig, stride_ik, BLOCK_K
        )
        offs_k = k_start + tl.arange(0, BLOCK_K)
        keys = _load_candidate_tile(
            key_base, candidate, valid, offs_ck, ck_in, stride_kn, stride_kc
        )
        logits = _logits(query, keys, valid, scale, L2)
        # P = exp(S − lse): the forward's softmax weights
        weights = tl.where(row_valid[:, None], tl.exp(logits - lse[:, None]), 0.0)

        weights_grad = tl.zeros([BLOCK_M, BLOCK_K], tl.float32)
        for cv_start in range(0, value_channels, BLOCK_CV):
            offs_cv = cv_start + tl.arange(0, BLOCK_CV)
            cv_in = offs_cv < value_channels
            grad_readout_offsets = _row_offsets(
                batch, offs_cv, row_group, row_pixel, stride_ob, stride_oc, stride_og, stride_op
            )
            grad_readout = tl.load(
                grad_readout_ptr + grad_readout_offsets,
                mask=row_valid[:, None] & cv_in[None, :],
                other=0.0,
            ).to(tl.float32)
            values = _load_candidate_tile(
                value_base, candidate, valid, offs_cv, cv_in, stride_vn, stride_vc
            )
            # dP = dO · v
            weights_grad += tl.sum(grad_readout[:, None, :] * values, axis=2)

        # dS = P ⊙ (dP − D) (softmax backward), times the logit scale
        logits_grad = weights * (weights_grad - delta[:, None]) * scale
        if L2:
            # S = (2 q·k − ‖k‖²)·scale: dq = 2 Σ_k dS k
            query_grad += 2.0 * tl.sum(logits_grad[:, :, None] * keys, axis=1)
        else:
            # S = q·k·scale: dq = Σ_k dS k
            query_grad += tl.sum(logits_grad[:, :, None] * keys, axis=1)
        # P and dS per (row, candidate), for the memory-side pass (dk, dv)
        _store_pairs(probs_ptr, logits_grad_ptr, batch, groups, group_size, candidates,
                     row_group, row_pixel, row_valid, offs_k, weights, logits_grad)  # fmt: skip

    tl.store(query_grad_ptr + query_offsets, query_grad, mask=query_mask)


@triton.jit
def _shared_candidates(index_base, group, candidates, k_start, stride_ig, stride_ik,
                       BLOCK_K: tl.constexpr):  # fmt: skip
    """One group's candidates ``[BLOCK_K]`` (−1 and padding → pixel 0, valid=False)."""
    offs_k = k_start + tl.arange(0, BLOCK_K)
    index = tl.load(index_base + group * stride_ig + offs_k * stride_ik,
                    mask=offs_k < candidates, other=-1).to(tl.int64)  # fmt: skip
    valid = index >= 0
    return tl.where(valid, index, 0), valid, offs_k


@triton.jit
def _candidate_rows(base, candidate, valid, offs_c, c_in, stride_n, stride_c):
    """Candidates' channels ``[BLOCK_K, channels]`` of pixel-major memory, in its own dtype
    (the tensor cores' operand)."""
    offsets = candidate[:, None] * stride_n + offs_c[None, :] * stride_c
    return tl.load(base + offsets, mask=valid[:, None] & c_in[None, :], other=0.0)


@triton.jit
def _qk_operand(x, like_ptr, FP32: tl.constexpr):
    """``x`` as a dot operand: in fp32 when ``FP32``, else in ``like_ptr``'s dtype."""
    if FP32:
        return x.to(tl.float32)
    return x.to(like_ptr.dtype.element_ty)


@triton.jit
def _group_logits(query, keys, valid, scale, L2: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """S ``[BLOCK_M, BLOCK_K]`` of a group's pixels and its shared candidates, one tl.dot."""
    logits = tl.dot(query, tl.trans(keys), input_precision=DOT_PRECISION)
    if L2:
        key_f32 = keys.to(tl.float32)
        logits = 2.0 * logits - tl.sum(key_f32 * key_f32, axis=1)[None, :]
    return tl.where(valid[None, :], logits * scale, float("-inf"))


@triton.jit
def _gather_read_grouped_fwd_kernel(
    query_ptr, memory_key_ptr, memory_value_ptr, index_ptr, readout_ptr, lse_ptr,
    scale, groups, group_size, candidates, key_channels, value_channels,
    stride_qb, stride_qc, stride_qg, stride_qp,
    stride_kb, stride_kn, stride_kc,
    stride_vb, stride_vn, stride_vc,
    stride_ib, stride_ig, stride_ik,
    stride_ob, stride_oc, stride_og, stride_op,
    stride_lb, stride_lg, stride_lp,
    L2: tl.constexpr, DOT_PRECISION: tl.constexpr, QK_FP32: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_CK: tl.constexpr, BLOCK_CV: tl.constexpr,
):  # fmt: skip
    """The grouped read: one group per program, its pixels the rows of two matrix products
    per block of shared candidates (S = Q Kᵀ, then acc += P V), as flash attention does."""
    group = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    pid_cv = tl.program_id(2)
    rows = tl.arange(0, BLOCK_M)
    row_valid = rows < group_size
    offs_ck = tl.arange(0, BLOCK_CK)
    ck_in = offs_ck < key_channels
    offs_cv = pid_cv * BLOCK_CV + tl.arange(0, BLOCK_CV)
    cv_in = offs_cv < value_channels

    query_offsets = (batch * stride_qb + offs_ck[None, :] * stride_qc + group * stride_qg
                     + rows[:, None] * stride_qp)  # fmt: skip
    query = tl.load(query_ptr + query_offsets, mask=row_valid[:, None] & ck_in[None, :], other=0.0)
    query = _qk_operand(query, memory_key_ptr, QK_FP32)
    key_base = memory_key_ptr + batch * stride_kb
    value_base = memory_value_ptr + batch * stride_vb
    index_base = index_ptr + batch * stride_ib

    running_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    normaliser = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_CV], tl.float32)
    for k_start in range(0, candidates, BLOCK_K):
        candidate, valid, _ = _shared_candidates(
            index_base, group, candidates, k_start, stride_ig, stride_ik, BLOCK_K
        )
        keys = _candidate_rows(key_base, candidate, valid, offs_ck, ck_in, stride_kn, stride_kc)
        keys = _qk_operand(keys, memory_key_ptr, QK_FP32)
        logits = _group_logits(query, keys, valid, scale, L2, DOT_PRECISION)
        new_max, rescale, weights, normaliser = _online_softmax_step(
            logits, running_max, normaliser
        )
        values = _candidate_rows(value_base, candidate, valid, offs_cv, cv_in, stride_vn,
                                 stride_vc)  # fmt: skip
        values = _qk_operand(values, memory_value_ptr, DOT_FP32)
        # the weights take the values' dtype for the tensor cores, as flash attention's P
        acc = acc * rescale[:, None] + tl.dot(
            weights.to(values.dtype), values, input_precision=DOT_PRECISION
        )
        running_max = new_max

    readout_offsets = (batch * stride_ob + offs_cv[None, :] * stride_oc + group * stride_og
                       + rows[:, None] * stride_op)  # fmt: skip
    lse_ptrs = lse_ptr + batch * stride_lb + group * stride_lg + rows * stride_lp
    _store_readout_and_lse(
        readout_ptr + readout_offsets, row_valid[:, None] & cv_in[None, :],
        lse_ptrs, row_valid & (pid_cv == 0), acc, normaliser, running_max,
    )  # fmt: skip


@triton.jit
def _gather_read_grouped_bwd_kernel(
    query_ptr, memory_key_ptr, memory_value_ptr, index_ptr, grad_readout_ptr, lse_ptr, delta_ptr,
    query_grad_ptr, probs_ptr, logits_grad_ptr,
    scale, groups, group_size, candidates, key_channels, value_channels,
    stride_qb, stride_qc, stride_qg, stride_qp,
    stride_kb, stride_kn, stride_kc,
    stride_vb, stride_vn, stride_vc,
    stride_ib, stride_ig, stride_ik,
    stride_ob, stride_oc, stride_og, stride_op,
    stride_lb, stride_lg, stride_lp,
    L2: tl.constexpr, DOT_PRECISION: tl.constexpr, QK_FP32: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_CK: tl.constexpr, BLOCK_CV: tl.constexpr,
):  # fmt: skip
    """The grouped read's query-side backward: dP = dO Vᵀ, dS = P ⊙ (dP − D), dq = dS K as
    matrix products per block of shared candidates; P and dS stored for the memory side."""
    group = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    rows = tl.arange(0, BLOCK_M)
    row_valid = rows < group_size
    row_group = tl.zeros([BLOCK_M], tl.int32) + group  # every row is this group's
    offs_ck = tl.arange(0, BLOCK_CK)
    ck_in = offs_ck < key_channels

    query_offsets = (batch * stride_qb + offs_ck[None, :] * stride_qc + group * stride_qg
                     + rows[:, None] * stride_qp)  # fmt: skip
    query_mask = row_valid[:, None] & ck_in[None, :]
    query = tl.load(query_ptr + query_offsets, mask=query_mask, other=0.0)
    query = _qk_operand(query, memory_key_ptr, QK_FP32)
    row_offsets = batch * stride_lb + group * stride_lg + rows * stride_lp
    lse, delta = _row_statistics(lse_ptr, delta_ptr, row_offsets, row_valid)
    key_base = memory_key_ptr + batch * stride_kb
    value_base = memory_value_ptr + batch * stride_vb
    index_base = index_ptr + batch * stride_ib
    grad_base = grad_readout_ptr + batch * stride_ob + group * stride_og

    query_grad = tl.zeros([BLOCK_M, BLOCK_CK], tl.float32)
    for k_start in range(0, candidates, BLOCK_K):
        candidate, valid, offs_k = _shared_candidates(
            index_base, group, candidates, k_start, stride_ig, stride_ik, BLOCK_K
        )
        keys = _candidate_rows(key_base, candidate, valid, offs_ck, ck_in, stride_kn, stride_kc)
        keys = _qk_operand(keys, memory_key_ptr, QK_FP32)
        logits = _group_logits(query, keys, valid, scale, L2, DOT_PRECISION)
        weights = tl.where(row_valid[:, None], tl.exp(logits - lse[:, None]), 0.0)

        weights_grad = tl.zeros([BLOCK_M, BLOCK_K], tl.float32)
        for cv_start in range(0, value_channels, BLOCK_CV):
            offs_cv = cv_start + tl.arange(0, BLOCK_CV)
            cv_in = offs_cv < value_channels
            grad_readout = tl.load(
                grad_base + offs_cv[None, :] * stride_oc + rows[:, None] * stride_op,
                mask=row_valid[:, None] & cv_in[None, :],
                other=0.0,
            )
            values = _candidate_rows(value_base, candidate, valid, offs_cv, cv_in, stride_vn,
                                     stride_vc)  # fmt: skip
            values = _qk_operand(values, memory_value_ptr, DOT_FP32)
            # dP = dO Vᵀ
            weights_grad += tl.dot(
                grad_readout.to(values.dtype), tl.trans(values), input_precision=DOT_PRECISION
            )

        # dS = P ⊙ (dP − D), times the logit scale; dq = Σ_k dS k (×2 for l2)
        logits_grad = weights * (weights_grad - delta[:, None]) * scale
        step = tl.dot(logits_grad.to(keys.dtype), keys, input_precision=DOT_PRECISION)
        if L2:
            step = 2.0 * step
        query_grad += step
        _store_pairs(probs_ptr, logits_grad_ptr, batch, groups, group_size, candidates,
                     row_group, rows, row_valid, offs_k, weights, logits_grad)  # fmt: skip

    tl.store(query_grad_ptr + query_offsets, query_grad, mask=query_mask)


@triton.jit
def _gather_read_bwd_memory_kernel(
    query_ptr, memory_key_ptr, grad_readout_ptr, probs_ptr, logits_grad_ptr, order_ptr,
    segment_ptr, memory_key_grad_ptr, memory_value_grad_ptr,
    groups, group_size, candidates, memory_pixels, key_channels, value_channels,
    stride_qb, stride_qc, stride_qg, stride_qp,
    stride_kb, stride_kn, stride_kc,
    stride_ob, stride_oc, stride_og, stride_op,
    L2: tl.constexpr, COMPUTE_DK: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """dk (COMPUTE_DK) or dv of a block of memory pixels, each summed over the (row, candidate)
    pairs that read it, in a fixed order: the pairs sorted by memory pixel (``order``, stable)
    with each pixel's run of them given by ``segment`` ``[B, N + 1]`` (CSR offsets)."""
    pid_n = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < memory_pixels
    offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < (key_channels if COMPUTE_DK else value_channels)
    segment_base = segment_ptr + batch * (memory_pixels + 1)
    start = tl.load(segment_base + offs_n, mask=n_ok, other=0)
    length = tl.load(segment_base + offs_n + 1, mask=n_ok, other=0) - start
    rows = tl.arange(0, BLOCK_G)
    rows_ok = rows < group_size
    pairs = groups * candidates
    acc = tl.zeros([BLOCK_N, BLOCK_C], tl.float32)
    weight_sum = tl.zeros([BLOCK_N], tl.float32)  # Σ dS, for l2's −2 (Σ dS) k_n
    for j in range(0, tl.max(length, axis=0)):
        pair_ok = j < length
        pair = tl.load(order_ptr + batch * pairs + start + j, mask=pair_ok, other=0)
        group = pair // candidates
        candidate = pair % candidates
        ok = pair_ok[:, None] & rows_ok[None, :]
        # P (dv) or dS (dk) of each of the group's rows for this candidate, [BLOCK_N, BLOCK_G]
        weight_offsets = ((batch * groups + group[:, None]) * group_size
                          + rows[None, :]) * candidates + candidate[:, None]  # fmt: skip
        if COMPUTE_DK:
            weight = tl.load(logits_grad_ptr + weight_offsets, mask=ok, other=0.0)
            vectors = query_ptr + batch * stride_qb + offs_c[None, None, :] * stride_qc
            vectors += group[:, None, None] * stride_qg + rows[None, :, None] * stride_qp
        else:
            weight = tl.load(probs_ptr + weight_offsets, mask=ok, other=0.0)
            vectors = grad_readout_ptr + batch * stride_ob + offs_c[None, None, :] * stride_oc
            vectors += group[:, None, None] * stride_og + rows[None, :, None] * stride_op
        vector = tl.load(vectors, mask=ok[:, :, None] & c_ok[None, None, :], other=0.0)
        # dv_n += Σ_rows P dO_row;  dk_n += Σ_rows dS q_row
        acc += tl.sum(weight[:, :, None] * vector.to(tl.float32), axis=1)
        weight_sum += tl.sum(weight, axis=1)
    store_mask = n_ok[:, None] & c_ok[None, :]
    offsets = batch * stride_kb + offs_n[:, None] * stride_kn  # pixel-major, like the memory
    if COMPUTE_DK:
        if L2:
            # S = (2 q·k − ‖k‖²)·scale: dk = 2 Σ dS q − 2 (Σ dS) k (dS holds the scale)
            key = tl.load(memory_key_ptr + offsets + offs_c[None, :] * stride_kc,
                          mask=store_mask, other=0.0).to(tl.float32)  # fmt: skip
            acc = 2.0 * acc - 2.0 * weight_sum[:, None] * key
        tl.store(memory_key_grad_ptr + offsets + offs_c[None, :] * stride_kc, acc,
                 mask=store_mask)  # fmt: skip
    else:
        value_offsets = batch * memory_pixels * value_channels + offs_n[:, None] * value_channels
        tl.store(memory_value_grad_ptr + value_offsets + offs_c[None, :], acc, mask=store_mask)


_PRUNE = {"early_config_prune": prune_configs}
_fwd_plain = triton.autotune(
    _configs(plain=True, backward=False), key=_AUTOTUNE_KEY, prune_configs_by=_PRUNE
)(_gather_read_fwd_kernel)
_fwd_grouped = triton.autotune(
    _configs(plain=False, backward=False), key=_GROUPED_AUTOTUNE_KEY, prune_configs_by=_PRUNE
)(_gather_read_grouped_fwd_kernel)
_bwd_plain = triton.autotune(
    _configs(plain=True, backward=True), key=_AUTOTUNE_KEY, prune_configs_by=_PRUNE
)(_gather_read_bwd_kernel)
_bwd_grouped = triton.autotune(
    _configs(plain=False, backward=True), key=_GROUPED_AUTOTUNE_KEY, prune_configs_by=_PRUNE
)(_gather_read_grouped_bwd_kernel)


def _memory_configs() -> list[triton.Config]:
    if _INTERPRETING:
        return [triton.Config({"BLOCK_N": 8, "BLOCK_C": 8}, num_warps=1, num_stages=1)]
    return [
        triton.Config({"BLOCK_N": n, "BLOCK_C": c}, num_warps=w, num_stages=2)
        # BLOCK_N 16 and more compiled to 254 registers on sm_90 at HMMN's res3 (g = 4)
        for n, c, w in ((4, 32, 2), (4, 32, 4), (8, 32, 4), (8, 64, 4), (8, 32, 8))
    ]


def _prune_memory_configs(configs, named_args, **kwargs):
    """Configs whose [BLOCK_N, BLOCK_G, BLOCK_C] tile holds 16 elements per thread or fewer
    (the lightest if none does)."""
    if _INTERPRETING:
        return configs

    def load(config):
        blocks = config.kwargs
        return blocks["BLOCK_N"] * kwargs["BLOCK_G"] * blocks["BLOCK_C"] / (32 * config.num_warps)

    fitting = [c for c in configs if load(c) <= 16]
    return fitting or [min(configs, key=load)]


_bwd_memory = triton.autotune(
    _memory_configs(),
    key=["memory_pixels", "candidates", "key_channels", "value_channels", "group_size",
         "COMPUTE_DK"],
    prune_configs_by={"early_config_prune": _prune_memory_configs},
)(_gather_read_bwd_memory_kernel)  # fmt: skip


def pairs_by_memory_pixel(index: Tensor, memory_pixels: int) -> tuple[Tensor, Tensor]:
    """The (row, candidate) pairs of ``index`` ``[B, G, K]`` sorted by the memory pixel they
    read (stable: a pixel's pairs keep their order), as flat pair numbers ``[B, G·K]``, and
    each memory pixel's run of them, ``[B, N + 1]`` offsets (pairs with −1 sort first, before
    pixel 0's run). Sorting makes the backward's sums over a pixel's readers run in one fixed
    order: deterministic, unlike atomic adds."""
    flat = index.reshape(index.shape[0], -1)
    memory_of_pair, order = torch.sort(flat, dim=1, stable=True)
    pixels = torch.arange(memory_pixels + 1, device=index.device, dtype=flat.dtype)
    segments = torch.searchsorted(memory_of_pair, pixels.expand(index.shape[0], -1).contiguous())
    return order.contiguous(), segments.contiguous()


def launch_constants(
    grouped: bool,
    dtypes: tuple[torch.dtype, torch.dtype, torch.dtype],
    key_channels: int,
    group_size: int,
    device: torch.device,
    tf32: bool | None = None,
) -> dict:
    """Compile-time constants of a forward or query-side backward launch. Grouped: the group's
    pixels padded to 16 rows at least and Ck to 16 channels at least (tl.dot's smallest tile),
    fp32 dots on TF32 tensor cores when PyTorch allows it (``tf32=None`` asks it), S's
    operands in fp32 when the query's and keys' dtypes differ (mixed inputs are not rounded
    down), and every operand in fp32 for bf16 under the interpreter, whose bf16 dot products
    are wrong."""
    query_dtype, key_dtype, value_dtype = dtypes
    block_ck = triton.next_power_of_2(key_channels)
    if not grouped:
        return {"BLOCK_CK": block_ck}
    dot_fp32 = _INTERPRETING and torch.bfloat16 in (query_dtype, key_dtype, value_dtype)
    return {
        "BLOCK_CK": max(16, block_ck),
        "BLOCK_M": max(16, triton.next_power_of_2(group_size)),
        "DOT_PRECISION": dot_precision(torch.float32, device, tf32),
        "QK_FP32": query_dtype != key_dtype or dot_fp32,
        "DOT_FP32": dot_fp32,
    }


def _launch_constants(grouped: bool, queries: Tensor, key_rows: Tensor, value_rows: Tensor):
    dtypes = (queries.dtype, key_rows.dtype, value_rows.dtype)
    return launch_constants(grouped, dtypes, key_rows.shape[2], queries.shape[3], queries.device)


def _grid(batch: int, groups: int, value_channels: int, grouped: bool, backward: bool):
    """(row programs, batch, value-channel splits): rows first, the axis with the big limit."""

    def grid(meta):
        rows = groups if grouped else triton.cdiv(groups, meta["BLOCK_M"])
        splits = 1 if backward else triton.cdiv(value_channels, meta["BLOCK_CV"])
        return (rows, batch, splits)

    return grid


def _memory_grid(batch: int, memory_pixels: int, channels: int):
    def grid(meta):
        return (
            triton.cdiv(memory_pixels, meta["BLOCK_N"]),
            batch,
            triton.cdiv(channels, meta["BLOCK_C"]),
        )

    return grid


def _pixel_rows(memory: Tensor) -> Tensor:
    """``[B, C, N]`` memory as ``[B, N, C]`` rows. The forward kernels take any batch and pixel
    strides and need only each row's channels contiguous, so memory already laid out pixel
    by pixel (`MemoryBank.keys(..., pixel_major=True)`) is read in place, not copied."""
    rows = memory.transpose(1, 2)
    return rows if rows.stride(2) == 1 or rows.shape[2] == 1 else rows.contiguous()


class _GatherRead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query_key, memory_key, memory_value, index, similarity, scale):
        grouped = query_key.ndim == 4
        queries = (query_key if grouped else query_key.unsqueeze(3)).contiguous()
        batch, key_channels, groups, group_size = queries.shape
        value_channels = memory_value.shape[1]
        # pixel-major memory: a candidate's channels are one contiguous row
        key_rows = _pixel_rows(memory_key)  # [B, N, Ck]
        value_rows = _pixel_rows(memory_value)  # [B, N, Cv]
        index = index.contiguous()
        # every element of both is written by the kernel (zeros/−inf for rows with no candidate)
        readout = torch.empty(
            batch, value_channels, groups, group_size, device=queries.device, dtype=torch.float32
        )
        lse = torch.empty(batch, groups, group_size, device=queries.device, dtype=torch.float32)
        l2 = similarity == "l2"
        if readout.numel() > 0:
            kernel = _fwd_grouped if grouped else _fwd_plain
            constants = _launch_constants(grouped, queries, key_rows, value_rows)
            with torch.cuda.device(queries.device) if queries.is_cuda else nullcontext():
                kernel[_grid(batch, groups, value_channels, grouped, backward=False)](
                    queries, key_rows, value_rows, index, readout, lse,
                    scale, groups, group_size, index.shape[2], key_channels, value_channels,
                    *queries.stride(), *key_rows.stride(), *value_rows.stride(),
                    *index.stride(), *readout.stride(), *lse.stride(),
                    L2=l2, **constants,
                )  # fmt: skip
        # the caller's memory tensors, not the pixel-major copies: the backward redoes the cheap
        # transpose rather than keeping a second copy of the memory alive
        ctx.save_for_backward(queries, memory_key, memory_value, index, readout, lse)
        ctx.grouped, ctx.l2, ctx.scale = grouped, l2, scale
        ctx.dtypes = (query_key.dtype, memory_key.dtype, memory_value.dtype)
        result = readout.to(memory_value.dtype)
        return result if grouped else result.squeeze(3)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_readout):
        queries, memory_key, memory_value, index, readout, lse = ctx.saved_tensors
        key_rows = memory_key.transpose(1, 2).contiguous()  # [B, N, Ck]
        value_rows = memory_value.transpose(1, 2).contiguous()  # [B, N, Cv]
        grouped = ctx.grouped
        batch, key_channels, groups, group_size = queries.shape
        value_channels = value_rows.shape[2]
        grad_readout = (grad_readout if grouped else grad_readout.unsqueeze(3)).contiguous()
        # D = Σ_c dO·O per query row: the softmax backward's row term
        delta = (grad_readout.float() * readout).sum(dim=1).contiguous()  # [B, G, g]
        device = queries.device
        candidates, memory_pixels = index.shape[2], key_rows.shape[1]
        query_grad = torch.empty(queries.shape, device=device, dtype=torch.float32)
        key_grad_rows = torch.empty(key_rows.shape, device=device, dtype=torch.float32)
        value_grad_rows = torch.empty(value_rows.shape, device=device, dtype=torch.float32)
        if readout.numel() > 0 and candidates > 0:
            # P and dS per (row, candidate): written by the query-side pass, summed per memory
            # pixel by the memory-side pass
            pair_shape = (batch, groups, group_size, candidates)
            probs = torch.empty(pair_shape, device=device, dtype=torch.float32)
            logits_grad = torch.empty(pair_shape, device=device, dtype=torch.float32)
            kernel = _bwd_grouped if grouped else _bwd_plain
            constants = _launch_constants(grouped, queries, key_rows, value_rows)
            order, segments = pairs_by_memory_pixel(index, memory_pixels)
            with torch.cuda.device(device) if queries.is_cuda else nullcontext():
                kernel[_grid(batch, groups, value_channels, grouped, backward=True)](
                    queries, key_rows, value_rows, index, grad_readout, lse, delta,
                    query_grad, probs, logits_grad,
                    ctx.scale, groups, group_size, candidates, key_channels, value_channels,
                    *queries.stride(), *key_rows.stride(), *value_rows.stride(),
                    *index.stride(), *grad_readout.stride(), *lse.stride(),
                    L2=ctx.l2, **constants,
                )  # fmt: skip
                for compute_dk, channels in ((True, key_channels), (False, value_channels)):
                    _bwd_memory[_memory_grid(batch, memory_pixels, channels)](
                        queries, key_rows, grad_readout, probs, logits_grad, order, segments,
                        key_grad_rows, value_grad_rows,
                        groups, group_size, candidates, memory_pixels, key_channels,
                        value_channels,
                        *queries.stride(), *key_rows.stride(), *grad_readout.stride(),
                        L2=ctx.l2, COMPUTE_DK=compute_dk,
                        BLOCK_G=triton.next_power_of_2(group_size),
                    )  # fmt: skip
        else:
            query_grad.zero_()
            key_grad_rows.zero_()
            value_grad_rows.zero_()
        query_dtype, key_dtype, value_dtype = ctx.dtypes
        query_grad = query_grad.to(query_dtype)
        key_grad = key_grad_rows.transpose(1, 2).to(key_dtype).contiguous()
        value_grad = value_grad_rows.transpose(1, 2).to(value_dtype).contiguous()
        return (
            query_grad if grouped else query_grad.squeeze(3),
            key_grad,
            value_grad,
            None,
            None,
            None,
        )


def gather_read_triton(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    index: Tensor,
    *,
    similarity: str = "dot",
    scale: float | None = None,
    check_index_range: bool = True,
) -> Tensor:
    """The Triton gathered read (forward and backward); same contract as `vos.ops.gather_read`.

    Each input may be fp32, fp16 or bf16 (read in its own dtype, fp32 arithmetic inside; the
    readout has ``memory_value``'s dtype, each gradient its input's), with Ck ≤ 256 and
    g ≤ 64; CPU tensors need ``TRITON_INTERPRET=1``. ``check_index_range=False``
    skips the index range check (one host sync) when the caller has already done it.
    """
    if similarity not in ("dot", "l2"):
        raise ValueError(f"gather_read: unknown similarity {similarity!r}; expected 'dot' or 'l2'")
    validate_gather_read(
        query_key, memory_key, memory_value, index, check_index_range=check_index_range
    )
    reason = gather_read_kernel_unsupported_reason(query_key, memory_key, memory_value)
    if reason is not None:
        raise ValueError(f"gather_read (Triton): {reason}; use backend='torch'")
    if not query_key.is_cuda and not _INTERPRETING:
        raise RuntimeError(
            "gather_read (Triton): CPU tensors need TRITON_INTERPRET=1 set before vos.kernels "
            "is imported"
        )
    scale = query_key.shape[1] ** -0.5 if scale is None else float(scale)
    return _GatherRead.apply(query_key, memory_key, memory_value, index, similarity, scale)
