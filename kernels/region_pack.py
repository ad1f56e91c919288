"""Packed (varlen) region reads for the Triton memory read: block skipping near the ideal rate.

The forward kernel of `vos.kernels.memory_read` skips a (query block, memory block) pair when
either block holds no valid pixel, but its blocks are runs of BLOCK consecutive pixels in
raster order. A box is a stack of short row segments, and almost every segment touches one or
two blocks that lie mostly outside the box: at res4 of 480p (30×54, T = 5) an unaligned 13×25
box (20% of the frame) on memory and query computes 10.4% of all block pairs where 4.0% would
hold every valid pair, a 7×12 box (5%) 1.6% where 0.27% would, and other placements and
widths can do worse.

Packing changes the layout instead of the kernel, as FlashAttention's varlen mode does for
sequences. For each batch element the valid memory pixels (keys, values) and the valid query
pixels (keys) are gathered, in raster order, to the front of tensors as long as the batch's
largest region; the tail past an element's own count is masked. The unchanged kernel then
finds every memory block of the tail empty and skips it, and the query programs of the tail
exit at once, so it computes ⌈m_b/BLOCK_M⌉·⌈n_b/BLOCK_N⌉ block pairs for element b. The
readout is scattered back to the query grid, zeros at masked queries. Gather and scatter are
differentiable: the gradients of the keys and values are the kernel's, scattered back (zero
at masked pixels, as the reference gives).

Ideal (`ideal_block_pairs`): Σ_b m_b·n_b / (BLOCK_M·BLOCK_N) block pairs per value-channel
block, with m_b and n_b the valid query and memory pixels of element b. Packing computes at
most Σ_b ⌈m_b/BLOCK_M⌉·⌈n_b/BLOCK_N⌉, within (1 + BLOCK_M/m_b)·(1 + BLOCK_N/n_b) of it.

HMMN's Gaussian with masks: the kernel computes query pixel m's (y, x) from its index m,
which packing the queries would change. With a Gaussian only the memory is packed (the
centres and sigmas are gathered with the keys; memory pixels carry their own coordinates)
and the query mask is passed on as it is, so query blocks are still skipped in raster order.

Costs: the valid counts size the packed tensors (one host synchronisation); the gathers copy
the valid share of the keys and values once, and the scatter writes the readout once.
"""

from __future__ import annotations

import torch
from torch import Tensor
from vos.kernels.memory_read import (
    INTERPRETER_BLOCK_CV,
    INTERPRETER_BLOCK_M,
    INTERPRETER_BLOCK_N,
    memory_read_triton,
)


def _check_mask(name: str, mask: Tensor, batch: int, pixels: int) -> None:
    if mask.dtype != torch.bool or tuple(mask.shape) != (batch, pixels):
        raise ValueError(
            f"packed memory_read: {name} must be bool [{batch}, {pixels}], got "
            f"{mask.dtype} {tuple(mask.shape)}"
        )


def pack_index(mask: Tensor) -> tuple[Tensor, Tensor | None]:
    """Where each element's valid pixels go when packed to the front.

    Returns ``index [B, P]``, the pixel each packed slot takes (the valid pixels first, in
    raster order, then masked pixels to fill the slot), and the packed mask ``[B, P]`` that is
    True on each element's valid prefix, or None when every element fills all P slots. P is
    the largest valid count in the batch, at least 1 (so that an empty region still makes a
    well-formed, fully masked read).
    """
    counts = mask.sum(dim=1)
    fewest, most = (int(c) for c in torch.stack([counts.min(), counts.max()]).tolist())
    packed_pixels = max(1, most)
    # a stable sort on "masked" puts the valid pixels first, each side kept in raster order
    order = torch.sort(mask.logical_not().to(torch.uint8), dim=1, stable=True).indices
    index = order[:, :packed_pixels]
    if fewest == packed_pixels:
        return index, None
    packed_mask = torch.arange(packed_pixels, device=mask.device) < counts.unsqueeze(1)
    return index, packed_mask


def gather_pixels(tensor: Tensor, index: Tensor) -> Tensor:
    """``tensor [B, C, P]`` at ``index [B, P']`` along the pixels: ``[B, C, P']``."""
    return tensor.gather(2, index.unsqueeze(1).expand(-1, tensor.shape[1], -1))


def scatter_pixels(packed: Tensor, index: Tensor, pixels: int) -> Tensor:
    """The inverse of `gather_pixels` onto ``pixels`` slots, zero where ``index`` points nowhere.

    ``index`` holds distinct pixels (a prefix of a permutation), so no slot is written twice.
    """
    expanded = index.unsqueeze(1).expand(-1, packed.shape[1], -1)
    zeros = packed.new_zeros(packed.shape[0], packed.shape[1], pixels)
    return zeros.scatter(2, expanded, packed)


def packed_memory_read_triton(
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
    """`memory_read_triton` with the masked pixels packed out first (see the module docstring).

    Same arguments and result, ``readout [B, Cv, M]``; without masks it is that call.
    ``top_k`` (given to the kernel only when set) selects among the valid memory pixels,
    which packing keeps. ``block_counter`` counts the block pairs the kernel computes on the
    packed tensors.
    """
    for name, tensor in (("query_key", query_key), ("memory_key", memory_key)):
        if tensor.dim() != 3:
            raise ValueError(
                f"packed memory_read: {name} must be [B, C, pixels], got {tuple(tensor.shape)}"
            )
    batch, queries = query_key.shape[0], query_key.shape[2]
    if scale is None:
        scale = query_key.shape[1] ** -0.5
    if memory_mask is not None:
        _check_mask("memory_mask", memory_mask, batch, memory_key.shape[2])
        memory_index, memory_mask = pack_index(memory_mask)
        memory_key = gather_pixels(memory_key, memory_index)
        memory_value = gather_pixels(memory_value, memory_index)
        if gaussian_centers is not None:
            # each memory pixel's Gaussian travels with it (no gradient flows there)
            gaussian_centers = gaussian_centers.gather(
                1, memory_index.unsqueeze(2).expand(-1, -1, gaussian_centers.shape[2])
            )
            gaussian_sigma = gaussian_sigma.gather(1, memory_index)
    # the Gaussian needs each query's raster index: its queries stay in place, mask and all
    pack_queries = query_mask is not None and gaussian_centers is None
    query_index = None
    if pack_queries:
        _check_mask("query_mask", query_mask, batch, queries)
        query_index, query_mask = pack_index(query_mask)
        query_key = gather_pixels(query_key, query_index)
        query_hw = None  # only the Gaussian reads it, and the packed queries are no grid
    readout = memory_read_triton(
        query_key,
        memory_key,
        memory_value,
        similarity=similarity,
        scale=scale,
        query_mask=query_mask,
        memory_mask=memory_mask,
        gaussian_centers=gaussian_centers,
        gaussian_sigma=gaussian_sigma,
        query_hw=query_hw,
        block_counter=block_counter,
        **({} if top_k is None else {"top_k": top_k}),
    )
    if query_index is not None:
        readout = scatter_pixels(readout, query_index, queries)
    return readout


def ideal_block_pairs(
    query_mask: Tensor,
    memory_mask: Tensor,
    *,
    block_m: int = INTERPRETER_BLOCK_M,
    block_n: int = INTERPRETER_BLOCK_N,
) -> float:
    """Σ_b m_b·n_b / (block_m·block_n): the (query block, memory block) pairs a read restricted
    to the masks needs at the least, m_b and n_b the valid query and memory pixels of element
    b (masks ``[B, M]`` and ``[B, N]``; pass all-True masks for an unmasked side)."""
    valid_queries = query_mask.sum(dim=1).double()
    valid_memories = memory_mask.sum(dim=1).double()
    return float((valid_queries * valid_memories).sum()) / (block_m * block_n)


def computed_over_ideal(
    block_counter: Tensor,
    query_mask: Tensor,
    memory_mask: Tensor,
    value_channels: int,
    *,
    block_m: int = INTERPRETER_BLOCK_M,
    block_n: int = INTERPRETER_BLOCK_N,
    block_cv: int = INTERPRETER_BLOCK_CV,
) -> float:
    """The block pairs the forward computed (``block_counter`` after one forward call) over
    `ideal_block_pairs`; 1.0 is the least possible, larger is work spent on masked pixels.

    The counter counts (query block, value-channel block, memory block) triples, so it is
    divided by the value-channel blocks. The block sizes default to the interpreter's single
    config; on a GPU autotuning runs several configs, so read the counter under the
    interpreter (or after tuning, with the tuned block sizes).
    """
    value_blocks = -(-value_channels // block_cv)
    computed = block_counter.item() / value_blocks
    ideal = ideal_block_pairs(query_mask, memory_mask, block_m=block_m, block_n=block_n)
    if ideal == 0:  # nothing to read: any block computed is wasted
        return 1.0 if computed == 0 else float("inf")
    return computed / ideal
