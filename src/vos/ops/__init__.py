"""Memory-read operations: pure tensor functions shared by every reader.

Shapes follow docs/architecture.md: keys and values are flattened over pixels, ``[B, C, N]`` for
memory (N = T·H·W) and ``[B, C, M]`` for the query (M = H·W); ``B`` may fold objects in.
Each op has a PyTorch reference and a Triton kernel (``vos.kernels``), chosen by
``backend="auto" | "torch" | "triton"``; ``memory_read`` also takes ``"flex"``
(``torch.nn.attention.flex_attention``, `vos.ops.flex_read`), a baseline that ``"auto"``
never picks (see `vos.ops.dispatch`).
"""

from vos.ops.dispatch import BackendError
from vos.ops.gather_read import gather_read
from vos.ops.geometry import (
    boxes_from_masks,
    expand_index,
    mask_boxes,
    sine_positional_encoding,
    warp_backward,
    warped_mask_boxes,
)
from vos.ops.memory_read import (
    affinity_logits,
    gaussian_log_bias,
    memory_read,
    memory_top,
    query_grid_positions,
)
from vos.ops.window_read import WindowTop, window_read

__all__ = [
    "BackendError",
    "WindowTop",
    "affinity_logits",
    "boxes_from_masks",
    "expand_index",
    "gather_read",
    "mask_boxes",
    "gaussian_log_bias",
    "memory_read",
    "memory_top",
    "query_grid_positions",
    "sine_positional_encoding",
    "warp_backward",
    "warped_mask_boxes",
    "window_read",
]
