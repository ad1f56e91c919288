"""The global memory read of STM (dot product) and STCN (negative squared L2).

readout[b, :, m] = Σ_n softmax_n(S[b, n, m]) · memory_value[b, :, n]

with S = q·k / √Ck (STM, "dot") or S = (2 q·k − ‖k‖²) / √Ck (STCN, "l2"; the −‖q‖² term is
constant along the softmax axis and dropped). Affinities are computed in fp32 whatever the
input precision, because half-precision logits over thousands of memory pixels overflow.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

Similarity = Literal["dot", "l2"]
Backend = Literal["auto", "torch"]


def _at_least_fp32(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def affinity_logits(
    query_key: Tensor,
    memory_key: Tensor,
    *,
    similarity: Similarity = "dot",
    scale: float | None = None,
) -> Tensor:
    """Similarity logits ``[B, N, M]`` between memory keys ``[B, Ck, N]`` and query keys ``[B, Ck, M]``."""
    if query_key.shape[:2] != memory_key.shape[:2]:
        raise ValueError(
            f"query_key {tuple(query_key.shape)} and memory_key {tuple(memory_key.shape)} "
            "must share [B, Ck]"
        )
    channels = query_key.shape[1]
    scale = 1.0 / math.sqrt(channels) if scale is None else scale
    qk = _at_least_fp32(query_key)
    mk = _at_least_fp32(memory_key)
    dot = torch.bmm(mk.transpose(1, 2), qk)  # [B, N, M]
    if similarity == "dot":
        return dot * scale
    if similarity == "l2":
        memory_norm = mk.pow(2).sum(dim=1).unsqueeze(2)  # [B, N, 1]
        return (2 * dot - memory_norm) * scale
    raise ValueError(f"unknown similarity {similarity!r}; expected 'dot' or 'l2'")


def memory_read(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    *,
    similarity: Similarity = "dot",
    scale: float | None = None,
    memory_mask: Tensor | None = None,
    query_mask: Tensor | None = None,
    top_k: int | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Read memory values for every query pixel: ``[B, Cv, M]``.

    Args:
        query_key: ``[B, Ck, M]``.
        memory_key: ``[B, Ck, N]``.
        memory_value: ``[B, Cv, N]``.
        similarity: ``"dot"`` (STM) or ``"l2"`` (STCN).
        scale: logit scale; ``1/√Ck`` by default.
        memory_mask: ``[B, N]`` bool; False memory pixels are excluded from the softmax.
            A query whose memory is entirely masked out reads 0.
        query_mask: ``[B, M]`` bool; False query pixels read 0.
        top_k: keep only the k largest logits per query pixel (STCN's truncated softmax).
        backend: only the PyTorch reference exists so far; ``"auto"`` selects it.
    """
    if backend not in ("auto", "torch"):
        raise ValueError(f"unknown backend {backend!r}; expected 'auto' or 'torch'")
    if memory_key.shape[2] != memory_value.shape[2] or memory_key.shape[0] != memory_value.shape[0]:
        raise ValueError(
            f"memory_key {tuple(memory_key.shape)} and memory_value {tuple(memory_value.shape)} "
            "must share [B, ·, N]"
        )
    # autocast off: the softmax over N memory pixels needs fp32 logits (Cutie does the same)
    with torch.autocast(device_type=query_key.device.type, enabled=False):
        logits = affinity_logits(query_key, memory_key, similarity=similarity, scale=scale)
        if memory_mask is not None:
            logits = logits.masked_fill(~memory_mask.bool().unsqueeze(2), float("-inf"))
        if top_k is not None and top_k < logits.shape[1]:
            kth = logits.topk(top_k, dim=1).values[:, -1:, :]  # [B, 1, M]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        weights = torch.softmax(logits, dim=1)
        weights = torch.nan_to_num(weights, nan=0.0)  # rows with every memory pixel masked out
        readout = torch.bmm(
            _at_least_fp32(memory_value), weights.to(_at_least_fp32(memory_value).dtype)
        ).to(memory_value.dtype)
    if query_mask is not None:
        readout = readout * query_mask.to(readout.dtype).unsqueeze(1)
    return readout
