"""`vos.ops.memory_read` through PyTorch's ``flex_attention``: the baseline a kernel must beat.

The read is one-head attention: query pixels are flex's queries, memory pixels its keys and
values, ``B`` its batch. ``readout = flex_attention(q, k, v)`` with ``q [B, 1, M, Ck]``,
``k [B, 1, N, Ck]``, ``v [B, 1, N, Cv]``, and the reference's extras expressed in flex's terms:

- ``dot``: flex's own ``scale · q·k``, with the reference's scale.
- ``l2``: ``scale · (2 k·q − ‖k‖²)`` = flex's ``2·scale · q·k`` and a ``score_mod`` that
  subtracts ``scale · ‖k_n‖²``, captured per memory pixel (computed here, so gradients reach
  the keys through it as well as through the product).
- HMMN's Gaussian: a ``score_mod`` adding ``−((y_m − cy_n)² + (x_m − cx_n)²) / (2 σ_n²)``, with
  ``(y_m, x_m) = divmod(m, W)`` from flex's query index and the centres and ``1/(2σ²)``
  captured per memory pixel.
- a dense ``bias [B, N, M]``: a ``score_mod`` reading ``bias[b, n, m]``.
- masks: a ``block_mask`` (``create_block_mask`` over the captured ``memory_mask [B, N]`` and
  ``query_mask [B, M]``), so blocks with no valid pair are skipped, and partially valid ones
  get −∞ logits where either pixel is masked. flex gives a row with no valid key a zero output
  and zero gradients, which is the reference's rule for an empty memory and for a masked query
  alike. Masked pixels are also zeroed before the call, so a NaN outside the masks reaches
  nothing (a masked value inside a computed block is multiplied by a zero weight, and 0·NaN
  is NaN).

Not expressible here: STCN's ``top_k`` truncation (a per-query threshold over all of the
memory, which a score_mod cannot see) and ``return_top``; both raise `BackendError`.

Where it runs: through ``torch.compile(flex_attention)``, wherever that gives a fused kernel
(compiled once per shape and set of modifications: the first call of each pays the compile,
~20–30 s on a 2-core CPU): on CUDA, forward and backward; on the CPU, inference only (a C++
kernel). Otherwise flex's eager path runs, which materialises the ``[B, M, N]`` scores: fp64
(no fused kernel on the CPU) and anything on the CPU that needs gradients, which flex refuses
there in this PyTorch (eagerly or compiled); that refusal is reported as a `BackendError`.
The compiled kernels need head dimensions of at least 16, so narrower keys and values are
zero-padded (zero channels change neither ``k·q`` nor ``‖k‖²``; the padded output channels
are dropped).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from vos.ops.dispatch import BackendError

# flex_attention's default sparse block (the block_mask's tile); tests may shrink it on the
# CPU so that tiny shapes span several blocks.
SPARSE_BLOCK_SIZE = 128
# The compiled kernel's smallest head dimension (tl.dot needs 16).
MIN_HEAD_DIM = 16
# What flex_attention compiles to a fused kernel for on every device; others run eagerly.
FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def flex_unsupported_reason(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    *,
    top_k: int | None,
    return_top: int | None,
) -> str | None:
    """Why ``backend="flex"`` cannot run this call, or None when it can."""
    if top_k is not None and top_k < memory_key.shape[2]:
        return "top_k < N (truncated softmax) is not expressible as a flex score_mod"
    if return_top is not None:
        return "return_top needs the logits, which flex_attention does not return"
    dtypes = {query_key.dtype, memory_key.dtype, memory_value.dtype}
    if len(dtypes) != 1:
        return f"flex_attention needs one dtype for keys and values, got {sorted(map(str, dtypes))}"
    return None


@functools.cache
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def _pixels_last(tensor: Tensor, mask: Tensor | None, channels: int) -> Tensor:
    """``[B, C, P]`` -> ``[B, 1, P, channels]``: zeros where ``mask [B, P]`` is False, zero
    channels appended up to ``channels``."""
    if mask is not None:
        tensor = tensor.masked_fill(~mask.unsqueeze(1), 0)
    if channels > tensor.shape[1]:
        tensor = torch.nn.functional.pad(tensor, (0, 0, 0, channels - tensor.shape[1]))
    return tensor.transpose(1, 2).unsqueeze(1).contiguous()


def _score_mod(
    *,
    memory_norm: Tensor | None,
    gaussian: tuple[Tensor, Tensor, Tensor] | None,
    query_width: int,
    bias: Tensor | None,
):
    """flex's ``score_mod(score, b, h, q_idx, kv_idx)``: the terms added after ``scale · q·k``;
    None when there are none."""
    if memory_norm is None and gaussian is None and bias is None:
        return None

    def score_mod(score, b, h, q_idx, kv_idx):
        if memory_norm is not None:
            score = score - memory_norm[b, kv_idx]
        if gaussian is not None:
            center_y, center_x, inverse_two_variance = gaussian
            dy = (q_idx // query_width).to(center_y.dtype) - center_y[b, kv_idx]
            dx = (q_idx % query_width).to(center_x.dtype) - center_x[b, kv_idx]
            score = score - (dy * dy + dx * dx) * inverse_two_variance[b, kv_idx]
        if bias is not None:
            score = score + bias[b, kv_idx, q_idx]
        return score

    return score_mod


def _mask_mod(memory_mask: Tensor | None, query_mask: Tensor | None):
    if memory_mask is None:

        def query_only(b, h, q_idx, kv_idx):
            return query_mask[b, q_idx]

        return query_only
    if query_mask is None:

        def memory_only(b, h, q_idx, kv_idx):
            return memory_mask[b, kv_idx]

        return memory_only

    def both(b, h, q_idx, kv_idx):
        return memory_mask[b, kv_idx] & query_mask[b, q_idx]

    return both


def memory_read_flex(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    *,
    similarity: str,
    scale: float,
    query_mask: Tensor | None = None,
    memory_mask: Tensor | None = None,
    bias: Tensor | None = None,
    gaussian_centers: Tensor | None = None,
    gaussian_sigma: Tensor | None = None,
    query_hw: tuple[int, int] | None = None,
) -> Tensor:
    """``readout [B, Cv, M]`` of `vos.ops.memory_read` (inputs already validated there)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    batch, key_channels, queries = query_key.shape
    value_channels, memories = memory_value.shape[1:]
    device = query_key.device
    # logits in fp32 (fp64 for fp64), as the reference's
    stats_dtype = torch.float64 if query_key.dtype == torch.float64 else torch.float32
    memory_norm = None
    if similarity == "l2":
        keys = memory_key.to(stats_dtype)
        if memory_mask is not None:
            keys = keys.masked_fill(~memory_mask.unsqueeze(1), 0)
        memory_norm = scale * keys.pow(2).sum(dim=1)  # [B, N]
    gaussian = None
    if gaussian_centers is not None:
        centers = gaussian_centers.to(stats_dtype)
        gaussian = (
            centers[..., 0].contiguous(),
            centers[..., 1].contiguous(),
            1.0 / (2 * gaussian_sigma.to(stats_dtype).pow(2)),
        )
    score_mod = _score_mod(
        memory_norm=memory_norm,
        gaussian=gaussian,
        query_width=query_hw[1] if query_hw is not None else 1,
        bias=None if bias is None else bias.to(stats_dtype),
    )
    block_mask = None
    if memory_mask is not None or query_mask is not None:
        block_mask = create_block_mask(
            _mask_mod(memory_mask, query_mask),
            batch,
            None,
            queries,
            memories,
            device=device,
            BLOCK_SIZE=SPARSE_BLOCK_SIZE,
        )
    key_width = max(key_channels, MIN_HEAD_DIM)
    query = _pixels_last(query_key, query_mask, key_width)
    key = _pixels_last(memory_key, memory_mask, key_width)
    value = _pixels_last(memory_value, memory_mask, max(value_channels, MIN_HEAD_DIM))
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad
        for t in (query_key, memory_key, memory_value, bias, gaussian_centers, gaussian_sigma)
    )
    # the CPU's fused kernel is inference-only (its eager path refuses gradients with a
    # reason); fp64 has no fused kernel on the CPU, and runs eagerly everywhere
    fused = query_key.dtype in FUSED_DTYPES and (
        device.type == "cuda" or (device.type == "cpu" and not needs_grad)
    )
    attend = _compiled_flex_attention() if fused else flex_attention
    try:
        # autocast off: the inputs' precision is the read's, as in the reference
        with torch.autocast(device_type=device.type, enabled=False):
            readout = attend(
                query,
                key,
                value,
                score_mod=score_mod,
                block_mask=block_mask,
                scale=2 * scale if similarity == "l2" else scale,
            )
    except NotImplementedError as error:  # e.g. no backward on CPU tensors
        raise BackendError(f"memory_read: backend='flex' cannot run this call: {error}") from error
    return readout[:, 0, :, :value_channels].transpose(1, 2).contiguous()
