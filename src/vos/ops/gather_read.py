"""The gathered memory read: each query pixel reads only K given memory pixels.

HMMN's top-k guided fine-scale read (§3.2): a res3/res2 query pixel attends only to the memory
pixels that its res4 cell matched best, instead of to the whole memory. With ``index[b, m, k]``
the k-th candidate memory pixel of query pixel m,

    S[b, m, k]       = similarity(query_key[b, :, m], memory_key[b, :, index[b, m, k]])
    w[b, m, k]       = softmax_k(S[b, m, k])
    readout[b, :, m] = Σ_k w[b, m, k] · memory_value[b, :, index[b, m, k]]

with the similarities of `vos.ops.memory_read`: ``"dot"`` S = q·k · scale (STM) and ``"l2"``
S = (2 q·k − ‖k‖²) · scale (STCN; the −‖q‖² term is constant along the softmax axis and
dropped); the scale defaults to 1/√Ck. Logits are fp32 whatever the input precision.

Candidate conventions:
    - an index of −1 means "no candidate": it is excluded from the softmax, and a query pixel
      with no candidate at all reads 0;
    - duplicate indices are separate candidates: a memory pixel listed twice gets twice the
      weight (``exp(S)`` counted twice in numerator and denominator), exactly as if two
      memory pixels held the same key and value. Gradients of both copies accumulate.

Shapes (docs/architecture.md names; N = T·H·W memory pixels, M = H·W query pixels):
    plain    query_key [B, Ck, M],    index [B, M, K] -> readout [B, Cv, M]
    grouped  query_key [B, Ck, G, g], index [B, G, K] -> readout [B, Cv, G, g]
    memory_key [B, Ck, N], memory_value [B, Cv, N], index int64 (or int32) in [−1, N).

In the grouped form the g query pixels of a group share one candidate set (HMMN: the 2×2 res3
or 4×4 res2 children of a res4 cell, after a pixel-unshuffle), so every candidate key and value
is gathered once per group rather than once per pixel. The plain form is the grouped form with
g = 1, and the reference below computes it that way.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vos.kernels.contracts import (
    gather_read_kernel_unsupported_reason,
    validate_gather_read,
)
from vos.ops.dispatch import Backend, resolve_backend

Similarity = Literal["dot", "l2"]

# the reference gathers candidates in chunks of groups holding at most this many elements
# (4 MiB of fp32: cache-sized chunks measured fastest on a 2-core CPU)
_REFERENCE_CHUNK_ELEMENTS = 1 << 20
# Σ_k w_k v_k by a matrix product over candidate values gathered once per group, rather than
# by embedding_bag, when gradients flow and Cv ≤ this × g. embedding_bag's forward is the
# cheaper one (it never holds [rows, K, Cv]), but its backward sorts every bag's indices, and
# a group's g bags repeat its K candidates: g·K indices sorted per group whatever Cv. At
# HMMN's training sizes (K = 128, g = 4 / 16, Cv = 32-64) the product took HMMN's step on a
# 2-core CPU from 810 to 515 ms (docs/benchmarks.md); timed alone, forward and backward, it
# lost to embedding_bag at Cv ≥ 128 for g = 4 and Cv ≥ 64 for g = 1, won up to Cv = 256 (the
# largest timed) for g = 16 and at g = 1, Cv = 32 (which no reader runs), and always lost
# without gradients.
_MATMUL_VALUES_PER_GROUP_PIXEL = 16


def _at_least_fp32(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def gather_read_reference(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    index: Tensor,
    *,
    similarity: Similarity = "dot",
    scale: float | None = None,
) -> Tensor:
    """The PyTorch reference (differentiable); see the module docstring for shapes.

    Chunked over groups (query pixels in the plain form) so the gathered keys
    ``[chunk, K, Ck]`` stay bounded; inputs are assumed validated by `validate_gather_read`.
    """
    grouped = query_key.ndim == 4
    queries = query_key if grouped else query_key.unsqueeze(3)  # [B, Ck, G, g]
    batch, key_channels, groups, group_size = queries.shape
    value_channels, memory_pixels = memory_value.shape[1:]
    candidates = index.shape[2]
    scale = 1.0 / math.sqrt(key_channels) if scale is None else scale
    if candidates == 0:  # nothing to read: every query pixel reads 0
        readout = memory_value.new_zeros(batch, value_channels, groups, group_size)
        return readout if grouped else readout.squeeze(3)

    # autocast off: softmax logits stay fp32 (as in memory_read)
    with torch.autocast(device_type=query_key.device.type, enabled=False):
        compute_dtype = torch.promote_types(
            torch.promote_types(_at_least_fp32(query_key).dtype, _at_least_fp32(memory_key).dtype),
            _at_least_fp32(memory_value).dtype,
        )
        # pixel-major memory rows [B·N, C]: one gathered candidate is one contiguous row
        # (.contiguous(): for B = 1 the reshape alone is a strided view, and gathers crawl)
        key_rows = memory_key.to(compute_dtype).transpose(1, 2).contiguous().view(-1, key_channels)
        value_rows = memory_value.to(compute_dtype).transpose(1, 2).contiguous()
        value_rows = value_rows.view(-1, value_channels)
        query_groups = queries.to(compute_dtype).permute(0, 2, 1, 3)  # [B, G, Ck, g]
        row_offsets = torch.arange(batch, device=index.device).view(batch, 1, 1) * memory_pixels

        gradients = torch.is_grad_enabled() and any(
            t.requires_grad for t in (query_key, memory_key, memory_value)
        )
        matmul_values = gradients and value_channels <= _MATMUL_VALUES_PER_GROUP_PIXEL * group_size
        per_group = batch * candidates * (key_channels + 3 * group_size)
        if matmul_values:  # the gathered candidate values [rows, K, Cv]
            per_group += batch * candidates * value_channels
        chunk = max(1, _REFERENCE_CHUNK_ELEMENTS // max(1, per_group))
        readouts = []
        for start in range(0, groups, chunk):
            stop = min(groups, start + chunk)
            rows = batch * (stop - start)
            chunk_index = index[:, start:stop].long()  # [B, Gc, K]
            valid = (chunk_index >= 0).reshape(rows, candidates, 1)
            flat = (chunk_index.clamp_min(0) + row_offsets).reshape(-1)
            keys = key_rows.index_select(0, flat).view(rows, candidates, key_channels)
            query = query_groups[:, start:stop].reshape(rows, key_channels, group_size)

            # S = q·k · scale ("dot") or (2 q·k − ‖k‖²) · scale ("l2"): [rows, K, g]
            logits = torch.bmm(keys, query)
            if similarity == "l2":
                logits = 2 * logits - keys.pow(2).sum(dim=2, keepdim=True)
            logits = logits * scale
            # −1 candidates get exp = 0; a row with none gets finite logits and weight 0, so
            # neither the softmax nor its gradient sees an all −inf row (NaN)
            any_valid = valid.any(dim=1, keepdim=True)
            excluded = torch.where(any_valid, float("-inf"), 0.0).to(logits.dtype)
            logits = torch.where(valid, logits, excluded)
            weights = torch.softmax(logits, dim=1) * valid  # w = softmax_k(S)

            # readout = Σ_k w_k v_k (see _MATMUL_VALUES_PER_GROUP_PIXEL for the two forms)
            if matmul_values:
                values = value_rows.index_select(0, flat).view(rows, candidates, value_channels)
                readout = torch.bmm(weights.transpose(1, 2), values)  # [rows, g, Cv]
            else:  # one weighted bag of candidate rows per query pixel
                bags = flat.view(rows, 1, candidates).expand(rows, group_size, candidates)
                readout = F.embedding_bag(
                    bags.reshape(rows * group_size, candidates),
                    value_rows,
                    per_sample_weights=weights.transpose(1, 2).reshape(
                        rows * group_size, candidates
                    ),
                    mode="sum",
                )
            readouts.append(readout.reshape(batch, stop - start, group_size, value_channels))

        if readouts:
            readout = torch.cat(readouts, dim=1).permute(0, 3, 1, 2)  # [B, Cv, G, g]
        else:
            readout = value_rows.new_zeros(batch, value_channels, 0, group_size)
        readout = readout.to(memory_value.dtype)
    return readout if grouped else readout.squeeze(3)


def gather_read(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    index: Tensor,
    *,
    similarity: Similarity = "dot",
    scale: float | None = None,
    backend: Backend = "auto",
    check_index_range: bool = True,
) -> Tensor:
    """Read, for each query pixel, only the K memory pixels that ``index`` lists.

    Args:
        query_key: ``[B, Ck, M]`` (plain) or ``[B, Ck, G, g]`` (grouped: the g pixels of a
            group share one candidate set); the form follows ``query_key.ndim``.
        memory_key: ``[B, Ck, N]``.
        memory_value: ``[B, Cv, N]``.
        index: ``[B, M, K]`` (plain) or ``[B, G, K]`` (grouped), int64 memory pixel indices in
            ``[0, N)``; −1 = no candidate (excluded; a query with none reads 0). Duplicates
            count as separate candidates.
        similarity: ``"dot"`` (STM) or ``"l2"`` (STCN).
        scale: logit scale; ``1/√Ck`` by default.
        backend: ``"auto"`` (the Triton kernel on CUDA when it supports the case, else the
            reference), ``"torch"`` or ``"triton"`` (see `vos.ops.dispatch`). The kernel takes
            fp32/fp16/bf16 inputs (mixed allowed) with Ck ≤ 256 and g ≤ 64; anything else
            (float64, wider keys, larger groups) is the reference's.
        check_index_range: check that every index lies in ``[-1, N)`` (a min/max over the
            index: one host sync per call on a GPU). Callers whose indices are in range by
            construction (top-k positions) pass False.

    Returns:
        ``[B, Cv, M]`` (plain) or ``[B, Cv, G, g]`` (grouped), in ``memory_value``'s dtype.
    """
    if similarity not in ("dot", "l2"):
        raise ValueError(f"gather_read: unknown similarity {similarity!r}; expected 'dot' or 'l2'")
    validate_gather_read(
        query_key, memory_key, memory_value, index, check_index_range=check_index_range
    )
    scale = 1.0 / math.sqrt(query_key.shape[1]) if scale is None else float(scale)
    tensors = [query_key, memory_key, memory_value, index]
    reason = gather_read_kernel_unsupported_reason(query_key, memory_key, memory_value)
    if resolve_backend("gather_read", backend, tensors, reason) == "triton":
        from vos.kernels.gather_read import gather_read_triton

        return gather_read_triton(
            query_key,
            memory_key,
            memory_value,
            index,
            similarity=similarity,
            scale=scale,
            check_index_range=False,  # checked above, or in range by the caller's word
        )
    return gather_read_reference(
        query_key, memory_key, memory_value, index, similarity=similarity, scale=scale
    )


def gather_read_cost(
    B: int, Ck: int, Cv: int, M: int, K: int, group: int = 1, dtype_bytes: int = 4
) -> dict[str, int]:
    """Analytic FLOPs and bytes moved by one forward gather read.

    ``M`` counts query pixels (``G·g`` in the grouped form, ``group = g``; 1 = plain).

    - FLOPs: a multiply-add (2 FLOPs) per channel for every (query pixel, candidate) pair,
      in the logits (Ck) and in the weighted sum (Cv): ``2·B·M·K·(Ck + Cv)``. The softmax's
      O(B·M·K) exponentials and the ``l2`` key norms (O(K·Ck) per group) are not counted,
      as in flash-attention's convention.
    - Bytes: query keys and readout once (``B·M·(Ck + Cv)`` elements), the index once
      (8 bytes per entry, ``B·(M/g)·K`` entries), and each candidate's key and value once per
      group that lists it (``B·(M/g)·K·(Ck + Cv)`` elements): the grouped form moves
      ``g`` times fewer candidate bytes than the plain form. Elements are ``dtype_bytes``.
    """
    if M % group:
        raise ValueError(f"gather_read_cost: M={M} is not a multiple of the group size {group}")
    groups = M // group
    flops = 2 * B * M * K * (Ck + Cv)
    query_and_readout = B * M * (Ck + Cv) * dtype_bytes
    index_bytes = B * groups * K * 8
    candidate_bytes = B * groups * K * (Ck + Cv) * dtype_bytes
    return {"flops": flops, "bytes": query_and_readout + index_bytes + candidate_bytes}
