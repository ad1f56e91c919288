"""What each kernel accepts, importable without Triton: the callers in `vos.ops` check their
inputs here before dispatching, and the kernels check them again when called directly."""

from __future__ import annotations

import torch
from torch import Tensor

# gather_read: beyond these the kernel's register tiles (a full key row, one group's pixels)
# grow too large
GATHER_READ_MAX_KEY_CHANNELS = 256
GATHER_READ_MAX_GROUP_SIZE = 64
# window_read: the largest return_top its forward kernel's running top-k holds (LMRC: 5; a 5×5
# window holds 25)
WINDOW_READ_MAX_TOP_K = 32
GATHER_READ_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def validate_gather_read(
    query_key: Tensor,
    memory_key: Tensor,
    memory_value: Tensor,
    index: Tensor,
    *,
    check_index_range: bool = True,
) -> bool:
    """Check shapes, dtypes, devices and the index range; True for the grouped form.

    The range check costs one min/max reduction over the index (a host sync on CUDA).
    """
    if memory_key.ndim != 3 or memory_value.ndim != 3:
        raise ValueError(
            f"gather_read: memory_key {tuple(memory_key.shape)} must be [B, Ck, N] and "
            f"memory_value {tuple(memory_value.shape)} [B, Cv, N]"
        )
    batch, key_channels, memory_pixels = memory_key.shape
    if memory_value.shape[0] != batch or memory_value.shape[2] != memory_pixels:
        raise ValueError(
            f"gather_read: memory_key {tuple(memory_key.shape)} and memory_value "
            f"{tuple(memory_value.shape)} must share [B, ·, N]"
        )
    if query_key.ndim not in (3, 4):
        raise ValueError(
            f"gather_read: query_key {tuple(query_key.shape)} must be [B, Ck, M] (plain) or "
            "[B, Ck, G, g] (grouped)"
        )
    grouped = query_key.ndim == 4
    if tuple(query_key.shape[:2]) != (batch, key_channels):
        raise ValueError(
            f"gather_read: query_key {tuple(query_key.shape)} and memory_key "
            f"{tuple(memory_key.shape)} must share [B, Ck]"
        )
    rows = "G" if grouped else "M"
    expected = (batch, query_key.shape[2])
    if index.ndim != 3 or tuple(index.shape[:2]) != expected:
        raise ValueError(
            f"gather_read: index {tuple(index.shape)} must be [B, {rows}, K] = "
            f"[{expected[0]}, {expected[1]}, K] for query_key {tuple(query_key.shape)}"
        )
    if index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"gather_read: index must be int64 (or int32), got {index.dtype}")
    for name, tensor in (("query_key", query_key), ("memory_key", memory_key),
                         ("memory_value", memory_value)):  # fmt: skip
        if not tensor.is_floating_point():
            raise TypeError(f"gather_read: {name} must be floating point, got {tensor.dtype}")
    devices = {t.device for t in (query_key, memory_key, memory_value, index)}
    if len(devices) != 1:
        raise ValueError(
            f"gather_read: all tensors must be on one device, got {sorted(map(str, devices))}"
        )
    if check_index_range and index.numel() > 0:
        lowest, highest = (int(v) for v in torch.aminmax(index))
        if lowest < -1 or highest >= memory_pixels:
            raise ValueError(
                f"gather_read: index values must lie in [-1, N) = [-1, {memory_pixels}) "
                f"(-1 = no candidate); got values from {lowest} to {highest}"
            )
    return grouped


def gather_read_kernel_unsupported_reason(
    query_key: Tensor, memory_key: Tensor, memory_value: Tensor
) -> str | None:
    """None when the Triton kernel handles these (validated) inputs, else why not."""
    dtypes = {query_key.dtype, memory_key.dtype, memory_value.dtype}
    if not dtypes <= set(GATHER_READ_DTYPES):
        return (
            "the kernel reads float32/float16/bfloat16 query_key, memory_key and memory_value, "
            f"got {sorted(map(str, dtypes))}"
        )
    if memory_key.shape[1] > GATHER_READ_MAX_KEY_CHANNELS:
        return f"key channels {memory_key.shape[1]} > {GATHER_READ_MAX_KEY_CHANNELS}"
    if query_key.ndim == 4 and query_key.shape[3] > GATHER_READ_MAX_GROUP_SIZE:
        return f"group size {query_key.shape[3]} > {GATHER_READ_MAX_GROUP_SIZE}"
    return None
