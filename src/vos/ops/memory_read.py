"""The global memory read of STM / STCN, with masks (RMNet), a Gaussian bias (HMMN) and top-k (STCN).

Shapes (docs/architecture.md): ``query_key [B, Ck, M]``, ``memory_key [B, Ck, N]``,
``memory_value [B, Cv, N]``; M = H·W query pixels (raster order), N = T·H·W memory pixels.

Logits, for memory pixel n and query pixel m::

    dot: S[b, n, m] = k_n · q_m · scale                       (STM)
    l2:  S[b, n, m] = (2 k_n · q_m − ‖k_n‖²) · scale          (STCN: −‖q−k‖²·scale, the ‖q‖²
                                                               term is constant over n, dropped)

with ``scale = 1/√Ck`` by default, then

    S  += bias[b, n, m]                                        (any additive bias; reference only)
    S  += log G[b, n, m],  log G = −((y_m − cy_n)² + (x_m − cx_n)²) / (2 σ_n²)   (HMMN §3.1)
    S[b, n, :] = −∞ where memory_mask[b, n] is False           (RMNet Eq. 7: exp(S) = 0)
    W  = softmax over n of S                                   (top_k: only the k best n per m)
    readout[b, :, m] = Σ_n W[b, n, m] · memory_value[b, :, n]; 0 where query_mask[b, m] is False

HMMN multiplies the softmax by a Gaussian kernel G and L1-normalises over memory; since
L1-normalise(G ⊙ softmax(S)) = softmax(S + log G), the kernel guidance is an additive log bias,
which the Triton path computes inside the kernel from the centres and sigmas, block by block.
(y_m, x_m) = divmod(m, W) for ``query_hw = (H, W)``; centres are (y, x) in query-grid cells.

A query pixel whose memory is entirely masked out (an object that disappeared) reads 0 and gets
zero gradients. Affinities are fp32 (fp64 for fp64 inputs) whatever the input precision, with
autocast off: half-precision logits over thousands of memory pixels overflow.

The reference skips masked pixels rather than computing and discarding them: for each batch
element it gathers the valid memory and query pixels, reads densely, and scatters the result
back (crop-then-read), so a read restricted to 20%-area boxes does ~4% of the global read's
products (on the CPU it takes ~7% of its time: `vos.bench ops`, docs/benchmarks.md). A
mask that is a box in each frame (RMNet's regions) is cropped and scattered by strided slices,
any other mask by index; both give the same pixels in the same (raster) order. It
also bounds memory by processing the query pixels in chunks whose ``[B, chunk, N]`` logits
stay under ``chunk_elements`` (under autograd the saved softmax weights still total N×M; the
Triton kernel, flash-attention style, never materialises them).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vos.ops.dispatch import resolve_backend, triton_available
from vos.ops.flex_read import flex_unsupported_reason, memory_read_flex

Similarity = Literal["dot", "l2"]
Backend = Literal["auto", "torch", "triton", "flex"]

# Largest [B, chunk, N] logits tensor the reference builds at once (fp32: 64 MiB).
DEFAULT_CHUNK_ELEMENTS = 1 << 24
# The Triton kernel keeps a [BLOCK, Ck] key tile in registers.
KERNEL_MAX_KEY_CHANNELS = 256
# `vos.kernels.memory_top.MAX_RETURN_TOP` (the kernel module needs Triton, which is optional)
MAX_KERNEL_RETURN_TOP = 64


def _at_least_fp32(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def affinity_logits(
    query_key: Tensor,
    memory_key: Tensor,
    *,
    similarity: Similarity = "dot",
    scale: float | None = None,
    query_major: bool = False,
) -> Tensor:
    """Similarity logits ``[B, N, M]`` between memory keys ``[B, Ck, N]`` and query keys
    ``[B, Ck, M]``; ``query_major``: the same logits laid out ``[B, M, N]``, so that a softmax
    over memory runs along contiguous rows."""
    if query_key.shape[:2] != memory_key.shape[:2]:
        raise ValueError(
            f"query_key {tuple(query_key.shape)} and memory_key {tuple(memory_key.shape)} "
            "must share [B, Ck]"
        )
    channels = query_key.shape[1]
    scale = 1.0 / math.sqrt(channels) if scale is None else scale
    qk = _at_least_fp32(query_key)
    mk = _at_least_fp32(memory_key)
    # the scale rides on the [Ck, M] query operand or the matmul's alpha, not on a pass over
    # the [N, M] logits
    if similarity == "dot":
        qk = qk * scale
        return (
            torch.bmm(qk.transpose(1, 2), mk) if query_major else torch.bmm(mk.transpose(1, 2), qk)
        )
    left, right = (qk, mk) if query_major else (mk, qk)
    if similarity == "l2":
        memory_norm = mk.pow(2).sum(dim=1)  # [B, N]
        memory_norm = memory_norm.unsqueeze(1 if query_major else 2)
        # (2 q·k − ‖k‖²)·scale in one fused matmul
        return torch.baddbmm(memory_norm * -scale, left.transpose(1, 2), right, alpha=2 * scale)
    raise ValueError(f"unknown similarity {similarity!r}; expected 'dot' or 'l2'")


def query_grid_positions(
    query_hw: tuple[int, int],
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(y, x) of every query pixel in raster order, ``[H·W, 2]``: (y_m, x_m) = divmod(m, W)."""
    height, width = query_hw
    index = torch.arange(height * width, device=device)
    return torch.stack([index // width, index % width], dim=1).to(dtype)


def gaussian_log_bias(gaussian_centers: Tensor, gaussian_sigma: Tensor, query_yx: Tensor) -> Tensor:
    """HMMN's kernel as a log bias ``[B, N, M]``: log G = −‖p_m − c_n‖² / (2 σ_n²).

    ``gaussian_centers [B, N, 2]`` (y, x) and ``gaussian_sigma [B, N]`` in query-grid cells;
    ``query_yx [B or 1, M, 2]`` the query pixels' (y, x).
    """
    centers = gaussian_centers.unsqueeze(2)  # [B, N, 1, 2]
    positions = query_yx.unsqueeze(1)  # [B, 1, M, 2]
    squared_distance = (positions - centers).pow(2).sum(dim=-1)  # [B, N, M]
    return -squared_distance / (2 * gaussian_sigma.pow(2).unsqueeze(2))


def memory_read_cost(
    B: int,
    Ck: int,
    Cv: int,
    N: int,
    M: int,
    dtype_bytes: int,
    memory_fraction: float = 1.0,
    query_fraction: float = 1.0,
) -> dict[str, float]:
    """Analytic cost of one forward read: ``{"flops": ..., "bytes": ...}``.

    Only the pixels a masked read computes are counted: ``memory_fraction`` and
    ``query_fraction`` are the fractions of memory and query pixels inside the masks (boxes);
    both the reference and the kernel skip the rest. FLOPs are the two matrix products,
    2·n·m·Ck (logits) + 2·n·m·Cv (weighted sum), with n = memory_fraction·N and
    m = query_fraction·M; the softmax's O(n·m) elementwise work is not counted (the
    flash-attention convention). Bytes are the compulsory traffic: the valid query keys,
    memory keys and values read once, the whole readout ``[B, Cv, M]`` written once (masked
    queries are written as zeros) and the boolean masks read once. A tiled kernel re-reads
    the memory tiles once per query block; that reuse is served by cache and not counted.
    """
    valid_memory = memory_fraction * N
    valid_query = query_fraction * M
    flops = 2.0 * B * valid_memory * valid_query * (Ck + Cv)
    bytes_moved = dtype_bytes * B * (Ck * valid_query + (Ck + Cv) * valid_memory + Cv * M) + B * (
        N * (memory_fraction < 1.0) + M * (query_fraction < 1.0)
    )
    return {"flops": flops, "bytes": float(bytes_moved)}


def memory_top_cost(B: int, Ck: int, N: int, M: int, k: int, dtype_bytes: int) -> dict[str, float]:
    """Analytic cost of one `memory_top`: the logits' product, 2·N·M·Ck FLOPs (the running
    top list's comparisons are not counted), and the compulsory bytes: the query and memory
    keys read once, the k fp32 values and int64 indices of every query pixel written once."""
    flops = 2.0 * B * N * M * Ck
    bytes_moved = dtype_bytes * B * Ck * (M + N) + B * M * k * (4 + 8)
    return {"flops": flops, "bytes": float(bytes_moved)}


def _check_inputs(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    *,
    similarity: str,
    query_mask: Tensor | None,
    memory_mask: Tensor | None,
    bias: Tensor | None,
    gaussian_centers: Tensor | None,
    gaussian_sigma: Tensor | None,
    query_hw: tuple[int, int] | None,
    top_k: int | None,
    return_top: int | None,
) -> None:
    for name, tensor in (
        ("query_key", query_key),
        ("memory_key", memory_key),
        ("memory_value", memory_value),
    ):
        if tensor.dim() != 3:
            raise ValueError(f"{name} must be [B, C, pixels], got shape {tuple(tensor.shape)}")
    if query_key.shape[:2] != memory_key.shape[:2]:
        raise ValueError(
            f"query_key {tuple(query_key.shape)} and memory_key {tuple(memory_key.shape)} "
            "must share [B, Ck]"
        )
    if memory_key.shape[2] != memory_value.shape[2] or memory_key.shape[0] != memory_value.shape[0]:
        raise ValueError(
            f"memory_key {tuple(memory_key.shape)} and memory_value {tuple(memory_value.shape)} "
            "must share [B, ·, N]"
        )
    if similarity not in ("dot", "l2"):
        raise ValueError(f"unknown similarity {similarity!r}; expected 'dot' or 'l2'")
    batch, _, queries = query_key.shape
    memories = memory_key.shape[2]
    expected = {
        "query_mask": (batch, queries),
        "memory_mask": (batch, memories),
        "bias": (batch, memories, queries),
        "gaussian_centers": (batch, memories, 2),
        "gaussian_sigma": (batch, memories),
    }
    given = {
        "query_mask": query_mask,
        "memory_mask": memory_mask,
        "bias": bias,
        "gaussian_centers": gaussian_centers,
        "gaussian_sigma": gaussian_sigma,
    }
    for name, tensor in given.items():
        if tensor is not None and tuple(tensor.shape) != expected[name]:
            raise ValueError(
                f"{name} must have shape {expected[name]} (B, N = memory pixels, M = query "
                f"pixels), got {tuple(tensor.shape)}"
            )
    for name in ("query_mask", "memory_mask"):
        if given[name] is not None and given[name].dtype != torch.bool:
            raise ValueError(f"{name} must be a bool tensor, got {given[name].dtype}")
    if (gaussian_centers is None) != (gaussian_sigma is None):
        raise ValueError("gaussian_centers and gaussian_sigma must be given together")
    if gaussian_centers is not None and query_hw is None:
        raise ValueError(
            "gaussian_centers needs query_hw=(H, W), the query grid the centres are given in"
        )
    if query_hw is not None and (len(query_hw) != 2 or query_hw[0] * query_hw[1] != queries):
        raise ValueError(
            f"query_hw={tuple(query_hw)} does not match the {queries} query pixels "
            "(H·W must equal M)"
        )
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive number of memory pixels, got {top_k}")
    if return_top is not None and not 1 <= return_top <= memories:
        raise ValueError(f"return_top must be in [1, N={memories}], got {return_top}")


def _kernel_inputs_reason(tensors: list[Tensor]) -> str | None:
    """What the Triton kernels of `memory_read` and `memory_top` need of their inputs
    (``tensors[0]`` is the query key): one dtype among fp32/fp16/bf16, at most
    `KERNEL_MAX_KEY_CHANNELS` key channels. None when the inputs fit."""
    dtypes = {tensor.dtype for tensor in tensors}
    if len(dtypes) != 1 or not dtypes <= {torch.float32, torch.float16, torch.bfloat16}:
        return f"the kernel needs one dtype among fp32/fp16/bf16, got {sorted(map(str, dtypes))}"
    if tensors[0].shape[1] > KERNEL_MAX_KEY_CHANNELS:
        return f"Ck={tensors[0].shape[1]} > {KERNEL_MAX_KEY_CHANNELS} key channels"
    return None


def _kernel_unsupported_reason(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    *,
    bias: Tensor | None,
    gaussian_centers: Tensor | None,
    gaussian_sigma: Tensor | None,
    top_k: int | None,
    return_top: int | None,
) -> str | None:
    """Why the Triton kernel cannot run this call, or None when it can."""
    if bias is not None:
        return "a dense bias [B, N, M] is reference-only (the Gaussian bias is fused)"
    if return_top is not None and return_top > MAX_KERNEL_RETURN_TOP:
        return f"return_top={return_top} > {MAX_KERNEL_RETURN_TOP}, the kernel's running top list"
    shared = _kernel_inputs_reason([query_key, memory_key, memory_value])
    if shared is not None:
        return shared
    if top_k is not None and top_k < memory_key.shape[2] and triton_available():
        from vos.kernels.memory_read import max_top_k  # lazy: Triton is optional

        limit = max_top_k(query_key.dtype, query_key.device)
        if top_k > limit:
            return f"top_k={top_k} > {limit}, the kernel's running top-k (one memory block)"
    if gaussian_centers is not None and (
        gaussian_centers.requires_grad or gaussian_sigma.requires_grad
    ):
        return "the kernel computes no gradient for gaussian_centers / gaussian_sigma"
    return None


def memory_read(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    *,
    similarity: Similarity = "dot",
    scale: float | None = None,
    query_mask: Tensor | None = None,
    memory_mask: Tensor | None = None,
    bias: Tensor | None = None,
    gaussian_centers: Tensor | None = None,
    gaussian_sigma: Tensor | None = None,
    query_hw: tuple[int, int] | None = None,
    top_k: int | None = None,
    return_top: int | None = None,
    backend: Backend = "auto",
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    out: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Read memory values for every query pixel: ``readout [B, Cv, M]`` (input dtype).

    Args:
        query_key: ``[B, Ck, M]``.
        memory_key: ``[B, Ck, N]``.
        memory_value: ``[B, Cv, N]``.
        similarity: ``"dot"`` (STM) or ``"l2"`` (STCN).
        scale: logit scale; ``1/√Ck`` by default.
        query_mask: ``[B, M]`` bool; False query pixels read 0 (and are not computed).
        memory_mask: ``[B, N]`` bool; False memory pixels are excluded from the softmax and
            not computed (RMNet's boxes). A query with no valid memory pixel reads 0.
        bias: ``[B, N, M]`` additive logit bias (reference only).
        gaussian_centers: ``[B, N, 2]`` (y, x) per memory pixel, in query-grid cells (HMMN).
        gaussian_sigma: ``[B, N]`` the Gaussian's σ in cells, > 0. No gradient flows to the
            centres or sigmas on the kernel path (tracked positions are not learned).
        query_hw: ``(H, W)`` of the query grid, ``H·W = M``; needed with the Gaussian.
        top_k: STCN's truncated softmax over the k largest logits per query pixel; values tied
            with the k-th are all kept. ``top_k >= N`` is the full softmax.
        return_top: also return the ``return_top`` largest logits per query pixel over the
            memory (after masks and biases, before top_k truncation) and their memory indices,
            both ``[B, M, return_top]``; slots beyond the valid memory pixels, and masked-out
            query pixels, hold ``-inf`` and index ``-1``. Logits are fp32 (fp64 for fp64).
        backend: ``"auto"`` (kernel on CUDA when it supports the call), ``"torch"``,
            ``"triton"`` or ``"flex"`` (flex_attention, `vos.ops.flex_read`; see
            ``vos.ops.dispatch``).
        chunk_elements: the reference's largest ``[B, chunk, N]`` logits tensor.
        out: ``[B, Cv, M]`` of ``memory_value``'s dtype and device to write the readout into
            and return, any strides (e.g. the read's channels of a larger readout, which then
            needs no copy); without autograd only. The reference's masked reads write into
            it directly; the other paths copy their result.

    Returns:
        ``readout``, or ``(readout, top_values, top_indices)`` with ``return_top``.
    """
    _check_inputs(
        query_key,
        memory_key,
        memory_value,
        similarity=similarity,
        query_mask=query_mask,
        memory_mask=memory_mask,
        bias=bias,
        gaussian_centers=gaussian_centers,
        gaussian_sigma=gaussian_sigma,
        query_hw=query_hw,
        top_k=top_k,
        return_top=return_top,
    )
    if out is not None:
        _check_out(out, query_key, memory_key, memory_value)
    scale = 1.0 / math.sqrt(query_key.shape[1]) if scale is None else float(scale)
    unsupported = _kernel_unsupported_reason(
        query_key,
        memory_key,
        memory_value,
        bias=bias,
        gaussian_centers=gaussian_centers,
        gaussian_sigma=gaussian_sigma,
        top_k=top_k,
        return_top=return_top,
    )
    tensors = [query_key, memory_key, memory_value]
    flex_unsupported = flex_unsupported_reason(
        query_key, memory_key, memory_value, top_k=top_k, return_top=return_top
    )
    chosen = resolve_backend(
        "memory_read", backend, tensors, unsupported, flex_supported=flex_unsupported
    )
    # what every backend takes alike (the bias is the reference's and flex's only)
    read_options = dict(
        similarity=similarity,
        scale=scale,
        query_mask=query_mask,
        memory_mask=memory_mask,
        gaussian_centers=gaussian_centers,
        gaussian_sigma=gaussian_sigma,
        query_hw=query_hw,
    )
    if chosen == "flex":
        readout = memory_read_flex(query_key, memory_key, memory_value, bias=bias, **read_options)
        return _written(out, readout)
    if chosen == "triton":
        # lazy: Triton is optional. Masked (regional) reads pack the valid pixels first, so
        # the kernel computes near the regions' area; unmasked reads go straight to the kernel
        from vos.kernels.region_pack import packed_memory_read_triton

        readout = packed_memory_read_triton(
            query_key, memory_key, memory_value, top_k=top_k, **read_options
        )
        readout = _written(out, readout)
        if return_top is None:
            return readout
        top_values, top_indices = memory_top(
            query_key, memory_key, return_top, backend="triton", **read_options
        )
        return readout, top_values, top_indices
    # autocast off: the softmax over N memory pixels needs fp32 logits (Cutie does the same)
    with torch.autocast(device_type=query_key.device.type, enabled=False):
        return _reference_read(
            query_key,
            memory_key,
            memory_value,
            bias=bias,
            top_k=top_k,
            return_top=return_top,
            chunk_elements=chunk_elements,
            out=out,
            **read_options,
        )


def _check_out(out: Tensor, query_key: Tensor, memory_key: Tensor, memory_value: Tensor) -> None:
    expected = (query_key.shape[0], memory_value.shape[1], query_key.shape[2])
    if tuple(out.shape) != expected:
        raise ValueError(f"out must be [B, Cv, M] = {expected}, got {tuple(out.shape)}")
    if out.dtype != memory_value.dtype or out.device != memory_value.device:
        raise ValueError(
            f"out must have memory_value's dtype and device ({memory_value.dtype}, "
            f"{memory_value.device}), got {out.dtype} on {out.device}"
        )
    if torch.is_grad_enabled() and any(
        t.requires_grad for t in (query_key, memory_key, memory_value)
    ):
        raise ValueError("out= has no autograd: read without it when gradients are needed")


def _written(out: Tensor | None, readout: Tensor) -> Tensor:
    """``readout``, copied into ``out`` when one is given."""
    return readout if out is None else out.copy_(readout)


def memory_top(
    query_key: Tensor,
    memory_key: Tensor,
    k: int,
    *,
    similarity: Similarity = "dot",
    scale: float | None = None,
    query_mask: Tensor | None = None,
    memory_mask: Tensor | None = None,
    gaussian_centers: Tensor | None = None,
    gaussian_sigma: Tensor | None = None,
    query_hw: tuple[int, int] | None = None,
    backend: Backend = "auto",
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """The ``k`` largest logits of every query pixel over the memory, best first, and the
    memory pixels that hold them: ``(values [B, M, k], indices [B, M, k])``, the logits
    `memory_read` softmaxes (same similarity, scale, masks and Gaussian; LMRC's global top-k).

    Slots beyond the valid memory pixels (``k`` may exceed N) and masked-out query pixels
    hold ``-inf`` and index ``-1``. Values are fp32 (fp64 for fp64) and carry autograd to both
    keys; the kernel (`vos.kernels.memory_top`) finds the indices and the k logits are then
    recomputed from them when a key needs a gradient.
    """
    _check_inputs(
        query_key,
        memory_key,
        memory_key,  # stands in for the values: only the keys are read
        similarity=similarity,
        query_mask=query_mask,
        memory_mask=memory_mask,
        bias=None,
        gaussian_centers=gaussian_centers,
        gaussian_sigma=gaussian_sigma,
        query_hw=query_hw,
        top_k=None,
        return_top=None,
    )
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"memory_top: k must be a positive int, got {k!r}")
    scale = query_key.shape[1] ** -0.5 if scale is None else float(scale)  # memory_read's
    unsupported = _kernel_inputs_reason([query_key, memory_key])
    if k > MAX_KERNEL_RETURN_TOP:
        unsupported = f"k={k} > {MAX_KERNEL_RETURN_TOP}, the kernel's running top list"
    chosen = resolve_backend("memory_top", backend, [query_key, memory_key], unsupported)
    options = dict(
        similarity=similarity,
        scale=scale,
        query_mask=query_mask,
        memory_mask=memory_mask,
        gaussian_centers=gaussian_centers,
        gaussian_sigma=gaussian_sigma,
        query_hw=query_hw,
    )
    if chosen == "triton":
        from vos.kernels.memory_top import memory_top_triton  # lazy: Triton is optional

        values, indices = memory_top_triton(query_key, memory_key, k, **options)
        if torch.is_grad_enabled() and (query_key.requires_grad or memory_key.requires_grad):
            values = _pair_logits(query_key, memory_key, indices, **options)
        return values, indices
    with torch.autocast(device_type=query_key.device.type, enabled=False):
        return _reference_top(query_key, memory_key, k, chunk_elements=chunk_elements, **options)


def _reference_top(
    query_key: Tensor,
    memory_key: Tensor,
    k: int,
    *,
    similarity: str,
    scale: float,
    query_mask: Tensor | None,
    memory_mask: Tensor | None,
    gaussian_centers: Tensor | None,
    gaussian_sigma: Tensor | None,
    query_hw: tuple[int, int] | None,
    chunk_elements: int,
) -> tuple[Tensor, Tensor]:
    """`memory_top` a chunk of query pixels at a time (no [B, N, M] logits beyond a chunk)."""
    batch, _, queries = query_key.shape
    memories = memory_key.shape[2]
    kept = min(k, memories)
    query_yx = None
    if gaussian_centers is not None:
        query_yx = query_grid_positions(query_hw, query_key.device).unsqueeze(0)
    chunk = max(1, chunk_elements // max(1, batch * memories))
    keys = _at_least_fp32(memory_key)
    key_norm = keys.pow(2).sum(dim=1).unsqueeze(1)  # [B, 1, N], for l2
    values, indices = [], []
    for start in range(0, queries, chunk):
        columns = slice(start, start + chunk)
        # [B, chunk, N]: each query pixel's logits contiguous, so topk runs along rows
        dot = torch.bmm(_at_least_fp32(query_key[:, :, columns]).transpose(1, 2), keys)
        logits = dot * scale if similarity == "dot" else (2 * dot - key_norm) * scale
        if gaussian_centers is not None:
            logits = logits + gaussian_log_bias(
                gaussian_centers.to(logits.dtype),
                gaussian_sigma.to(logits.dtype),
                query_yx[:, columns].to(logits.dtype),
            ).transpose(1, 2)
        if memory_mask is not None:
            logits = logits.masked_fill(~memory_mask[:, None, :], float("-inf"))
        best = logits.topk(kept, dim=2)
        values.append(best.values)
        indices.append(best.indices)
    values = F.pad(torch.cat(values, dim=1), (0, k - kept), value=float("-inf"))
    indices = F.pad(torch.cat(indices, dim=1), (0, k - kept), value=-1)
    empty = values == float("-inf")  # no valid memory pixel in this slot
    if query_mask is not None:
        empty = empty | ~query_mask[:, :, None]
        values = values.masked_fill(~query_mask[:, :, None], float("-inf"))
    return values, indices.masked_fill(empty, -1)


def _pair_logits(
    query_key: Tensor,
    memory_key: Tensor,
    indices: Tensor,
    *,
    similarity: str,
    scale: float,
    gaussian_centers: Tensor | None,
    gaussian_sigma: Tensor | None,
    query_hw: tuple[int, int] | None,
    **_masks,
) -> Tensor:
    """The logits of the (query pixel, memory pixel) pairs ``indices [B, M, k]`` names, as
    `affinity_logits` (+ the Gaussian) computes them, ``-inf`` where the index is -1."""
    batch, channels, queries = query_key.shape
    k = indices.shape[2]
    held = indices >= 0
    flat = indices.clamp(min=0).flatten(1)  # [B, M·k]
    keys = _at_least_fp32(memory_key).transpose(1, 2)  # [B, N, Ck]
    paired = keys.gather(1, flat[:, :, None].expand(-1, -1, channels)).view(
        batch, queries, k, channels
    )
    query = _at_least_fp32(query_key).transpose(1, 2).unsqueeze(2)  # [B, M, 1, Ck]
    dot = (paired * query).sum(dim=3)
    logits = dot * scale if similarity == "dot" else (2 * dot - paired.pow(2).sum(dim=3)) * scale
    if gaussian_centers is not None:
        # each query pixel as its own batch element with its k memory pixels: [B·M, k, 1]
        centers = gaussian_centers.to(logits.dtype).gather(1, flat[:, :, None].expand(-1, -1, 2))
        sigma = gaussian_sigma.to(logits.dtype).gather(1, flat)
        query_yx = query_grid_positions(query_hw, query_key.device, logits.dtype)  # [M, 2]
        log_kernel = gaussian_log_bias(
            centers.view(batch * queries, k, 2),
            sigma.view(batch * queries, k),
            query_yx.repeat(batch, 1).unsqueeze(1),
        )
        logits = logits + log_kernel.view(batch, queries, k)
    return logits.masked_fill(~held, float("-inf"))


def _safe_softmax(logits: Tensor, dim: int) -> Tensor:
    """Softmax that gives 0 (and zero gradients, no NaN) where every logit is −∞."""
    if logits.shape[dim] == 0:
        return logits
    # the shift cancels in the ratio, so it needs no gradient; −∞ rows shift by 0
    peak = logits.detach().amax(dim=dim, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    weights = torch.exp(logits - peak)
    total = weights.sum(dim=dim, keepdim=True)
    return weights / torch.where(total > 0, total, torch.ones_like(total))


def _dense_read(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    *,
    similarity: str,
    scale: float,
    bias: Tensor | None,
    gaussian_centers: Tensor | None,
    gaussian_sigma: Tensor | None,
    query_yx: Tensor | None,
    top_k: int | None,
    return_top: int | None,
    chunk_elements: int,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Unmasked read in chunks of query pixels: readout ``[B, Cv, M]`` in the compute dtype,
    and with ``return_top`` the top logits and (local) memory indices ``[B, M, k]``."""
    batch, _, queries = query_key.shape
    memories = memory_key.shape[2]
    values = _at_least_fp32(memory_value)
    chunk = max(1, chunk_elements // max(1, batch * memories))
    # logits with no truncation, bias or Gaussian are finite: one fused softmax, no guard for
    # rows that are all −∞
    softmax = (
        _safe_softmax
        if bias is not None or gaussian_centers is not None or top_k is not None
        else torch.softmax
    )
    readouts, top_values, top_indices = [], [], []
    for start in range(0, max(queries, 1), chunk):
        columns = slice(start, start + chunk)
        # query-major [B, chunk, N]: the softmax over memory runs along contiguous rows
        logits = affinity_logits(
            query_key[:, :, columns],
            memory_key,
            similarity=similarity,
            scale=scale,
            query_major=True,
        )
        if bias is not None:
            logits = logits + bias[:, :, columns].transpose(1, 2).to(logits.dtype)
        if gaussian_centers is not None:
            logits = logits + gaussian_log_bias(
                gaussian_centers.to(logits.dtype),
                gaussian_sigma.to(logits.dtype),
                query_yx[:, columns].to(logits.dtype),
            ).transpose(1, 2)
        if return_top is not None:
            best = logits.topk(min(return_top, memories), dim=2)
            top_values.append(best.values)
            top_indices.append(best.indices)
        if top_k is not None and top_k < memories:
            # STCN's truncation; every logit tied with the k-th is kept
            kth = logits.topk(top_k, dim=2).values[:, :, -1:]  # [B, chunk, 1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        weights = softmax(logits, dim=2)
        readouts.append(torch.bmm(values.to(weights.dtype), weights.transpose(1, 2)))
    readout = readouts[0] if len(readouts) == 1 else torch.cat(readouts, dim=2)
    if return_top is None:
        return readout, None, None
    return readout, torch.cat(top_values, dim=1), torch.cat(top_indices, dim=1)


# One frame's box in raster order: ``rows`` runs of ``length`` pixels, the first starting at
# pixel ``first`` of the whole mask and each ``stride`` pixels after the one before (for a
# box, the grid's width): (first, rows, length, stride).
BoxRows = tuple[int, int, int, int]


def _box_runs(mask: Tensor, frame_pixels: int) -> list[BoxRows] | None:
    """The True pixels of a ``[P]`` mask as one `BoxRows` per frame of ``frame_pixels``
    pixels (none for an empty frame), or None when some frame's True pixels are not runs of
    one length at one stride, or when there is no True pixel at all (gathered by an empty
    index, the read stays in the autograd graph); P not a multiple of ``frame_pixels`` is
    one frame.

    No grid width is needed: the rows of a box are runs of equal length whose starts are a
    constant stride apart, whatever the stride, and every description returned covers
    exactly the mask's True pixels, so reading by it is exact for any mask it accepts.
    """
    return _box_runs_per_element(mask.unsqueeze(0), frame_pixels)[0]


def _box_runs_per_element(masks: Tensor, frame_pixels: int) -> list[list[BoxRows] | None]:
    """`_box_runs` of each row of ``masks [B, P]``, found together: the host waits on the
    device a fixed number of times per mask (the ``nonzero`` calls and one ``tolist``), not
    that many times per batch element."""
    elements, pixels = masks.shape
    frames = pixels // frame_pixels if frame_pixels > 0 and pixels % frame_pixels == 0 else 1
    grid = masks.reshape(elements * frames, -1).to(torch.int8)  # one row per (element, frame)
    border = grid.new_zeros(grid.shape[0], 1)
    # +1 where a run starts, −1 just past where it ends, per row
    step = torch.diff(grid, dim=1, prepend=border, append=border)
    run_row, run_start = (step == 1).nonzero(as_tuple=True)
    run_length = (step == -1).nonzero(as_tuple=True)[1] - run_start
    same_row = run_row[1:] == run_row[:-1]
    gap = run_start[1:] - run_start[:-1]
    unequal_lengths = same_row & (run_length[1:] != run_length[:-1])
    unequal_gaps = same_row[1:] & same_row[:-1] & (gap[1:] != gap[:-1])
    # an element is not boxes when any of its rows breaks the pattern, or it has no run
    broken = torch.zeros(elements, dtype=torch.bool, device=masks.device)
    broken[run_row[1:][unequal_lengths] // frames] = True
    broken[run_row[2:][unequal_gaps] // frames] = True
    rows = torch.bincount(run_row, minlength=elements * frames)
    broken |= rows.view(elements, frames).sum(dim=1) == 0
    present = (rows > 0).nonzero().squeeze(1)
    first_run = (rows.cumsum(0) - rows)[present]
    rows = rows[present]
    length = run_length[first_run]
    # a frame's single run has no stride: its own length makes it one contiguous span
    stride = torch.where(rows > 1, F.pad(gap, (0, 1))[first_run], length)
    first = (present % frames) * grid.shape[1] + run_start[first_run]
    described = torch.stack([present // frames, first, rows, length, stride], dim=1)
    # the one read back to the host: every frame's box, then which elements are not boxes
    flat = torch.cat([described.flatten(), broken.to(described.dtype)]).tolist()
    boxes, broken_flags = flat[: described.numel()], flat[described.numel() :]
    runs: list[list[BoxRows] | None] = [[] for _ in range(elements)]
    for i in range(0, len(boxes), 5):
        runs[boxes[i]].append(tuple(boxes[i + 1 : i + 5]))
    return [None if is_broken else element for element, is_broken in zip(runs, broken_flags)]


def _take_runs(tensor: Tensor, boxes: list[BoxRows]) -> Tensor:
    """``tensor [C, P]`` at the boxes' pixels, ``[C, p]`` in raster order: strided slices,
    copied once (cheaper than gathering the short rows of a box pixel by pixel)."""
    channels = tensor.shape[0]
    taken = tensor.new_empty(channels, sum(rows * length for _, rows, length, _ in boxes))
    offset = 0
    for first, rows, length, stride in boxes:
        span = (rows - 1) * stride + length
        taken[:, offset : offset + rows * length].unflatten(1, (rows, length)).copy_(
            tensor[:, first : first + span].unfold(1, length, stride)
        )
        offset += rows * length
    return taken


def _put_runs(target: Tensor, boxes: list[BoxRows], values: Tensor) -> None:
    """Write ``values [C, p]`` at the boxes' pixels of ``target [C, P]`` (`_take_runs`'s
    inverse), in place."""
    offset = 0
    for first, rows, length, stride in boxes:
        span = (rows - 1) * stride + length
        target[:, first : first + span].unfold(1, length, stride).copy_(
            values[:, offset : offset + rows * length].unflatten(1, (rows, length))
        )
        offset += rows * length


def _reference_read(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    *,
    similarity: str,
    scale: float,
    query_mask: Tensor | None,
    memory_mask: Tensor | None,
    bias: Tensor | None,
    gaussian_centers: Tensor | None,
    gaussian_sigma: Tensor | None,
    query_hw: tuple[int, int] | None,
    top_k: int | None,
    return_top: int | None,
    chunk_elements: int,
    out: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    batch, _, queries = query_key.shape
    value_channels = memory_value.shape[1]
    device = query_key.device
    query_yx = None
    if gaussian_centers is not None:
        query_yx = query_grid_positions(query_hw, device).unsqueeze(0)  # [1, M, 2]
    options = dict(
        similarity=similarity,
        scale=scale,
        top_k=top_k,
        return_top=return_top,
        chunk_elements=chunk_elements,
    )
    if memory_mask is None and query_mask is None:
        readout, top_values, top_indices = _dense_read(
            query_key,
            memory_key,
            memory_value,
            bias=bias,
            gaussian_centers=gaussian_centers,
            gaussian_sigma=gaussian_sigma,
            query_yx=query_yx,
            **options,
        )
    else:
        # Crop-then-read per batch element: masked pixels are never computed (RMNet's regions).
        # A mask that is a box in each frame is cropped by strided slices, any other by index.
        readout, all_top_values, all_top_indices = None, [], []
        # the bias, the Gaussian and return_top's memory indices are cropped by index
        per_pixel_extras = (
            bias is not None or gaussian_centers is not None or return_top is not None
        )
        # memory frames are query-sized (N = T·M); one query frame
        no_runs = [None] * batch
        all_memory_runs = (
            no_runs if memory_mask is None else _box_runs_per_element(memory_mask, queries)
        )
        all_query_runs = (
            no_runs if query_mask is None else _box_runs_per_element(query_mask, queries)
        )
        for b in range(batch):
            memory_runs, query_runs = all_memory_runs[b], all_query_runs[b]
            memory_index = query_index = None
            if memory_mask is not None and (memory_runs is None or per_pixel_extras):
                memory_index = memory_mask[b].nonzero().squeeze(1)
            if query_mask is not None and (query_runs is None or per_pixel_extras):
                query_index = query_mask[b].nonzero().squeeze(1)

            def take(tensor: Tensor | None, dim: int, index: Tensor | None) -> Tensor | None:
                if tensor is None or index is None:
                    return tensor
                return tensor.index_select(dim, index)

            def crop(tensor: Tensor, runs: list[BoxRows] | None, index: Tensor | None) -> Tensor:
                # [C, pixels] -> [C, valid pixels], raster order either way
                return take(tensor, 1, index) if runs is None else _take_runs(tensor, runs)

            element_bias = (
                None if bias is None else take(take(bias[b], 0, memory_index), 1, query_index)
            )
            read, top_values, top_indices = _dense_read(
                crop(query_key[b], query_runs, query_index).unsqueeze(0),
                crop(memory_key[b], memory_runs, memory_index).unsqueeze(0),
                crop(memory_value[b], memory_runs, memory_index).unsqueeze(0),
                bias=None if element_bias is None else element_bias.unsqueeze(0),
                gaussian_centers=None
                if gaussian_centers is None
                else take(gaussian_centers[b], 0, memory_index).unsqueeze(0),
                gaussian_sigma=None
                if gaussian_sigma is None
                else take(gaussian_sigma[b], 0, memory_index).unsqueeze(0),
                query_yx=None
                if query_yx is None
                else take(query_yx[0], 0, query_index).unsqueeze(0),
                **options,
            )
            read = read[0]  # [Cv, m_b]
            if readout is None:  # written in place: no per-element copies to stack
                if out is not None and out.dtype == read.dtype:
                    readout = out.zero_()  # the caller's buffer: nothing to copy afterwards
                else:
                    readout = read.new_zeros(batch, value_channels, queries)
            if query_mask is None:
                readout[b] = read
            elif query_runs is not None:
                _put_runs(readout[b], query_runs, read)
            else:
                readout[b].index_copy_(1, query_index, read)
            if return_top is not None:
                top_values, top_indices = top_values[0], top_indices[0]  # [m_b, min(k, n_b)]
                if memory_index is not None:
                    top_indices = memory_index[top_indices]
                missing = return_top - top_values.shape[1]  # fewer valid memory pixels than k
                top_values = F.pad(top_values, (0, missing), value=float("-inf"))
                top_indices = F.pad(top_indices, (0, missing), value=-1)
                if query_index is not None:
                    top_values = top_values.new_full(
                        (queries, return_top), float("-inf")
                    ).index_copy(0, query_index, top_values)
                    top_indices = top_indices.new_full((queries, return_top), -1).index_copy(
                        0, query_index, top_indices
                    )
                all_top_values.append(top_values)
                all_top_indices.append(top_indices)
        if return_top is not None:
            top_values, top_indices = torch.stack(all_top_values), torch.stack(all_top_indices)
    readout = _written(out, readout.to(memory_value.dtype)) if readout is not out else out
    if return_top is None:
        return readout
    return readout, top_values, top_indices
