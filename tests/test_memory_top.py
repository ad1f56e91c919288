"""`vos.ops.memory_top` (the k largest memory logits per query pixel, LMRC's global top-k) and
its Triton kernel, which also serves ``memory_read(..., return_top=k, backend="triton")``.

The kernel runs under Triton's interpreter (conftest); sizes are not block multiples (the
kernel's memory block is max(16, next power of two of k)).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from helpers import interpreter_only

from vos.ops import affinity_logits, gaussian_log_bias, memory_read, memory_top
from vos.ops.dispatch import BackendError
from vos.ops.memory_read import MAX_KERNEL_RETURN_TOP, query_grid_positions

kernel = importlib.import_module("vos.kernels.memory_top")

pytestmark = pytest.mark.usefixtures("tensors_on_test_device")

BATCH, KEY_CHANNELS, MEMORIES, QUERIES, GRID = 2, 8, 37, 21, (3, 7)


def keys(seed: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(BATCH, KEY_CHANNELS, QUERIES, generator=g)
    memory = torch.randn(BATCH, KEY_CHANNELS, MEMORIES, generator=g)
    return query.to(dtype), memory.to(dtype)


def masks(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 50)
    memory_mask = torch.rand(BATCH, MEMORIES, generator=g) > 0.5
    memory_mask[1, :] = False
    memory_mask[1, 3:6] = True  # 3 valid memory pixels: fewer than most k below
    query_mask = torch.rand(BATCH, QUERIES, generator=g) > 0.3
    return {"memory_mask": memory_mask, "query_mask": query_mask}


def gaussian(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed + 100)
    centers = torch.rand(BATCH, MEMORIES, 2, generator=g) * torch.tensor(GRID)
    sigma = 0.5 + 2 * torch.rand(BATCH, MEMORIES, generator=g)
    return {"gaussian_centers": centers, "gaussian_sigma": sigma, "query_hw": GRID}


def written_out(query, memory, k, similarity, memory_mask=None, query_mask=None, **bias):
    """Every logit of the read in fp64, sorted: the values and indices the op must return."""
    logits = affinity_logits(query.double(), memory.double(), similarity=similarity)
    if bias:
        yx = query_grid_positions(bias["query_hw"], dtype=torch.float64).unsqueeze(0)
        logits = logits + gaussian_log_bias(
            bias["gaussian_centers"].double(), bias["gaussian_sigma"].double(), yx
        )
    if memory_mask is not None:
        logits = logits.masked_fill(~memory_mask[:, :, None], float("-inf"))
    order = logits.sort(dim=1, descending=True)
    values = order.values.transpose(1, 2)[:, :, :k]
    indices = order.indices.transpose(1, 2)[:, :, :k]
    pad = k - values.shape[2]
    values = torch.nn.functional.pad(values, (0, pad), value=float("-inf"))
    indices = torch.nn.functional.pad(indices, (0, pad), value=-1)
    if query_mask is not None:
        values = values.masked_fill(~query_mask[:, :, None], float("-inf"))
    return values, indices.masked_fill(values == float("-inf"), -1)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=interpreter_only)])
@pytest.mark.parametrize(
    "similarity, k, extras",
    [
        ("dot", 1, "none"),
        ("l2", 20, "none"),
        ("l2", 5, "masks"),
        ("l2", 40, "masks"),  # k > N on top of the masks
        ("dot", 20, "gaussian"),
    ],
)
def test_memory_top_is_the_k_largest_logits_and_where_they_are(backend, similarity, k, extras):
    """Against the fully sorted fp64 logits: the same values (fp32 tolerance) in the same
    order, and the same memory pixels; k beyond the valid pixels pads with -inf / -1, and
    masked-out queries hold nothing."""
    query, memory = keys(k)
    options = {"masks": masks(k), "gaussian": gaussian(k), "none": {}}[extras]
    want_values, want_indices = written_out(query, memory, k, similarity, **options)
    values, indices = memory_top(
        query, memory, k, similarity=similarity, backend=backend, **options
    )
    assert values.dtype == torch.float32 and indices.dtype == torch.int64
    torch.testing.assert_close(values, want_values.float(), atol=1e-5, rtol=1e-5)
    assert torch.equal(indices, want_indices)


@interpreter_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_memory_top_kernel_at_half_precision(dtype):
    """fp16/bf16 keys: the kernel's logits within one unit of the dtype of the reference's, and
    its indices point at memory pixels whose reference logit is that close to the slot's."""
    query, memory = keys(3, dtype)
    want, _ = memory_top(query, memory, 20, backend="torch")
    values, indices = memory_top(query, memory, 20, backend="triton")
    tolerance = torch.finfo(dtype).eps * want.abs().amax().item()
    torch.testing.assert_close(values, want, atol=tolerance, rtol=0)
    logits = affinity_logits(query, memory).transpose(1, 2)  # [B, M, N] in fp32
    torch.testing.assert_close(logits.gather(2, indices), want, atol=tolerance, rtol=0)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=interpreter_only)])
def test_memory_top_gradients_reach_both_keys(backend):
    """The values carry autograd: the gradients equal those of the selected logits written out
    (the kernel's indices, then the logits recomputed from them)."""
    query, memory = keys(7)
    options = {**masks(7), **gaussian(7)}
    grad = torch.randn(BATCH, QUERIES, 6, generator=torch.Generator().manual_seed(8))
    inputs = [x.clone().requires_grad_() for x in (query, memory)]
    values, indices = memory_top(*inputs, 6, similarity="l2", backend=backend, **options)
    held = indices >= 0
    got = torch.autograd.grad(values.masked_fill(~held, 0.0), inputs, grad.masked_fill(~held, 0))
    inputs = [x.clone().requires_grad_() for x in (query, memory)]
    yx = query_grid_positions(GRID).unsqueeze(0)
    logits = affinity_logits(*inputs, similarity="l2") + gaussian_log_bias(
        options["gaussian_centers"], options["gaussian_sigma"], yx
    )
    chosen = logits.transpose(1, 2).gather(2, indices.clamp(min=0))
    want = torch.autograd.grad(chosen.masked_fill(~held, 0.0), inputs, grad.masked_fill(~held, 0))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


@interpreter_only
def test_memory_read_return_top_runs_on_the_kernel():
    """``memory_read(..., return_top=k, backend="triton")``: the kernel's readout and the top
    list equal the reference's, with masks."""
    query, memory = keys(11)
    value = torch.randn(BATCH, 12, MEMORIES, generator=torch.Generator().manual_seed(12))
    options = dict(return_top=9, similarity="l2", **masks(11))
    want = memory_read(query, memory, value, backend="torch", **options)
    got = memory_read(query, memory, value, backend="triton", **options)
    for name, g, w in zip(("readout", "values"), got[:2], want[:2]):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
    assert torch.equal(got[2], want[2])


@interpreter_only
def test_memory_top_kernel_limits():
    query, memory = keys(0)
    with pytest.raises(BackendError, match=f"k={MAX_KERNEL_RETURN_TOP + 1}"):
        memory_top(query, memory, MAX_KERNEL_RETURN_TOP + 1, backend="triton")
    assert kernel.MAX_RETURN_TOP == MAX_KERNEL_RETURN_TOP  # one limit, stated twice
    with pytest.raises(ValueError, match="positive int"):
        memory_top(query, memory, 0)
    # "auto" on CPU tensors is the reference, which takes any k
    values, indices = memory_top(query, memory, MAX_KERNEL_RETURN_TOP + 1)
    assert values.shape[2] == MAX_KERNEL_RETURN_TOP + 1 and bool(
        (indices[..., MEMORIES:] == -1).all()
    )


@interpreter_only
def test_memory_top_kernel_orders_ties_by_memory_index():
    """Equal logits: the kernel's packed keys put the smaller memory index first (one key
    repeated at memory pixels 4, 9 and 30: three adjacent slots, in index order)."""
    query, memory = keys(5)
    query = query[:1, :, :6]
    memory = memory[:1].clone()
    memory[:, :, 9] = memory[:, :, 4]
    memory[:, :, 30] = memory[:, :, 4]
    _, indices = memory_top(query, memory, MEMORIES, backend="triton")
    for row in indices.flatten(0, 1).tolist():
        positions = [row.index(i) for i in (4, 9, 30)]
        assert positions == [positions[0], positions[0] + 1, positions[0] + 2]
