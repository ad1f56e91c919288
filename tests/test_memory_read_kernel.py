"""`vos.ops.memory_read` with masks, Gaussian bias, top-k and return_top, and its Triton kernel.

The kernel runs on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``, set in
conftest), so shapes are tiny but never block multiples (the interpreter's blocks are 16).

Tolerances:
- fp32 kernel vs fp32 reference, forward and gradients: atol = rtol = 1e-4.
- fp16 / bf16: both the kernel and the reference at that precision are compared with an fp64
  read of the same rounded inputs; the kernel's max error must be at most twice the
  reference's plus one unit of the dtype's precision (eps · max |fp64|). The kernel rounds
  the softmax weights and dS to the input precision before their tensor-core products, as
  flash-attention does, which the reference (fp32 throughout) does not.
- fp64 identities and gradcheck on the reference: torch defaults for fp64.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from helpers import interpreter_only

from vos.ops.dispatch import BackendError
from vos.ops.memory_read import (
    affinity_logits,
    gaussian_log_bias,
    memory_read,
    memory_read_cost,
    query_grid_positions,
)

# vos.kernels is installed from kernels/ (outside src/), hence imported by name here
kernels = importlib.import_module("vos.kernels.memory_read")
memory_read_triton = kernels.memory_read_triton
INTERPRETER_BLOCK_M = kernels.INTERPRETER_BLOCK_M
INTERPRETER_BLOCK_N = kernels.INTERPRETER_BLOCK_N
INTERPRETER_BLOCK_CV = kernels.INTERPRETER_BLOCK_CV

FP32_TOLERANCE = dict(atol=1e-4, rtol=1e-4)

# VOS_TEST_DEVICE=cuda (`make gpu-check`) runs these tests on the GPU (conftest)
pytestmark = pytest.mark.usefixtures("tensors_on_test_device")


def make_inputs(
    batch, key_channels, value_channels, memories, queries, seed=0, dtype=torch.float32
):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, key_channels, queries, generator=g).to(dtype),
        torch.randn(batch, key_channels, memories, generator=g).to(dtype),
        torch.randn(batch, value_channels, memories, generator=g).to(dtype),
    )


def random_gaussian(batch, memories, query_hw, seed=0):
    g = torch.Generator().manual_seed(seed + 100)
    height, width = query_hw
    centers = torch.rand(batch, memories, 2, generator=g) * torch.tensor([height, width])
    sigma = 0.5 + 2 * torch.rand(batch, memories, generator=g)
    return centers, sigma


def read_with_grads(query_key, memory_key, memory_value, grad_readout, **options):
    """Readout and the gradients of <readout, grad_readout> w.r.t. the keys and values."""
    inputs = [x.detach().clone().requires_grad_() for x in (query_key, memory_key, memory_value)]
    readout = memory_read(*inputs, **options)
    grads = torch.autograd.grad(readout, inputs, grad_readout.to(readout.dtype))
    return (readout, *grads)


def assert_all_close(actual, expected, **tolerance):
    names = ("readout", "d query_key", "d memory_key", "d memory_value")
    for name, a, e in zip(names, actual, expected):
        torch.testing.assert_close(a, e, msg=lambda m, name=name: f"{name}: {m}", **tolerance)


# B=2, Ck=8, Cv=12, N=37 (2 full blocks + 5), M=21 on a 3×7 grid
SHAPE = dict(batch=2, key_channels=8, value_channels=12, memories=37, queries=21)
QUERY_HW = (3, 7)


def case_options(case: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed + 7)
    batch, memories, queries = SHAPE["batch"], SHAPE["memories"], SHAPE["queries"]
    options: dict = {}
    if "memory_mask" in case:
        options["memory_mask"] = torch.rand(batch, memories, generator=g) > 0.4
    if "query_mask" in case:
        options["query_mask"] = torch.rand(batch, queries, generator=g) > 0.4
    if "gaussian" in case:
        centers, sigma = random_gaussian(batch, memories, QUERY_HW, seed)
        options.update(gaussian_centers=centers, gaussian_sigma=sigma, query_hw=QUERY_HW)
    return options


CASES = [
    "plain",
    "memory_mask",
    "query_mask",
    "memory_mask+query_mask",
    "gaussian",
    "gaussian+memory_mask+query_mask",
]


@pytest.mark.parametrize("similarity", ["dot", "l2"])
@pytest.mark.parametrize("case", CASES)
def test_kernel_matches_reference_fp32(similarity, case):
    query_key, memory_key, memory_value = make_inputs(**SHAPE)
    grad_readout = torch.randn(SHAPE["batch"], SHAPE["value_channels"], SHAPE["queries"])
    options = dict(similarity=similarity, **case_options(case))
    kernel = read_with_grads(
        query_key, memory_key, memory_value, grad_readout, backend="triton", **options
    )
    reference = read_with_grads(
        query_key, memory_key, memory_value, grad_readout, backend="torch", **options
    )
    assert_all_close(kernel, reference, **FP32_TOLERANCE)


@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_kernel_splits_wide_values_over_programs(similarity):
    """Cv wider than one value block: dV per value block, dK looping over the value channels."""
    value_channels = 2 * INTERPRETER_BLOCK_CV + 3
    shape = dict(SHAPE, value_channels=value_channels)
    query_key, memory_key, memory_value = make_inputs(**shape, seed=3)
    grad_readout = torch.randn(shape["batch"], value_channels, shape["queries"])
    options = dict(similarity=similarity, **case_options("gaussian+memory_mask", seed=3))
    kernel = read_with_grads(
        query_key, memory_key, memory_value, grad_readout, backend="triton", **options
    )
    reference = read_with_grads(
        query_key, memory_key, memory_value, grad_readout, backend="torch", **options
    )
    assert_all_close(kernel, reference, **FP32_TOLERANCE)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_kernel_half_precision(dtype, similarity):
    query_key, memory_key, memory_value = make_inputs(**SHAPE, seed=1, dtype=dtype)
    grad_readout = torch.randn(SHAPE["batch"], SHAPE["value_channels"], SHAPE["queries"]).to(dtype)
    options = dict(similarity=similarity, **case_options("gaussian+memory_mask+query_mask", 1))

    def read(backend, compute_dtype):
        inputs = (x.to(compute_dtype) for x in (query_key, memory_key, memory_value))
        return read_with_grads(*inputs, grad_readout.to(compute_dtype), backend=backend, **options)

    exact = read("torch", torch.float64)
    reference = read("torch", dtype)
    kernel = read("triton", dtype)
    eps = torch.finfo(dtype).eps
    for name, k, r, e in zip(("readout", "dq", "dk", "dv"), kernel, reference, exact):
        assert k.dtype == dtype
        kernel_error = (k.double() - e).abs().max().item()
        reference_error = (r.double() - e).abs().max().item()
        bound = 2 * reference_error + eps * e.abs().max().item()
        assert kernel_error <= bound, f"{name}: kernel error {kernel_error:.2e} > {bound:.2e}"


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_empty_memory_reads_zero_with_zero_gradients(backend):
    """An object that disappeared: all its memory masked out -> readout 0, gradients 0, no NaN."""
    query_key, memory_key, memory_value = make_inputs(**SHAPE, seed=2)
    memory_mask = torch.ones(SHAPE["batch"], SHAPE["memories"], dtype=torch.bool)
    memory_mask[1] = False
    grad_readout = torch.randn(SHAPE["batch"], SHAPE["value_channels"], SHAPE["queries"])
    readout, *grads = read_with_grads(
        query_key, memory_key, memory_value, grad_readout, memory_mask=memory_mask, backend=backend
    )
    assert torch.all(readout[1] == 0)
    for grad in grads:
        assert torch.isfinite(grad).all()
        assert torch.all(grad[1] == 0)
    unmasked = read_with_grads(
        query_key[:1], memory_key[:1], memory_value[:1], grad_readout[:1], backend=backend
    )
    assert_all_close([readout[:1]] + [g[:1] for g in grads], unmasked, **FP32_TOLERANCE)


@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_all_true_masks_equal_unmasked_read(similarity):
    query_key, memory_key, memory_value = make_inputs(**SHAPE, seed=4)
    grad_readout = torch.randn(SHAPE["batch"], SHAPE["value_channels"], SHAPE["queries"])
    masks = dict(
        memory_mask=torch.ones(SHAPE["batch"], SHAPE["memories"], dtype=torch.bool),
        query_mask=torch.ones(SHAPE["batch"], SHAPE["queries"], dtype=torch.bool),
    )
    plain = read_with_grads(
        query_key, memory_key, memory_value, grad_readout, backend="triton", similarity=similarity
    )
    masked = read_with_grads(
        query_key,
        memory_key,
        memory_value,
        grad_readout,
        backend="triton",
        similarity=similarity,
        **masks,
    )
    assert_all_close(masked, plain, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_one_by_one_grids(backend):
    """M = 1 query pixel (a 1×1 grid) and N = 1 memory pixel; the read copies that value."""
    query_key, memory_key, memory_value = make_inputs(1, 4, 3, 1, 1, seed=5)
    centers = torch.tensor([[[0.3, -0.2]]])
    sigma = torch.tensor([[0.7]])
    readout = memory_read(
        query_key,
        memory_key,
        memory_value,
        gaussian_centers=centers,
        gaussian_sigma=sigma,
        query_hw=(1, 1),
        backend=backend,
    )
    torch.testing.assert_close(readout, memory_value)
    query_key, memory_key, memory_value = make_inputs(2, 4, 3, 9, 1, seed=6)
    grad_readout = torch.randn(2, 3, 1)
    for similarity in ("dot", "l2"):
        options = dict(similarity=similarity, query_hw=(1, 1))
        options.update(zip(("gaussian_centers", "gaussian_sigma"), random_gaussian(2, 9, (1, 1))))
        kernel = read_with_grads(
            query_key, memory_key, memory_value, grad_readout, backend="triton", **options
        )
        reference = read_with_grads(
            query_key, memory_key, memory_value, grad_readout, backend="torch", **options
        )
        assert_all_close(kernel, reference, **FP32_TOLERANCE)


def box_mask(frames, height, width, box):
    """[frames·H·W] bool, True inside box = (y0, y1, x0, x1) (exclusive ends) in every frame."""
    y0, y1, x0, x1 = box
    mask = torch.zeros(frames, height, width, dtype=torch.bool)
    mask[:, y0:y1, x0:x1] = True
    return mask.flatten()


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_box_masked_read_equals_crop_then_read(backend):
    """RMNet's regional read: masks from boxes (touching the frame border) = crop, read, scatter."""
    frames, height, width = 2, 5, 7
    query_key, memory_key, memory_value = make_inputs(
        2, 6, 5, frames * height * width, height * width, seed=7
    )
    memory_boxes = [(0, 3, 4, 7), (1, 5, 0, 7)]
    query_boxes = [(2, 5, 0, 3), (0, 5, 0, 7)]
    memory_mask = torch.stack([box_mask(frames, height, width, box) for box in memory_boxes])
    query_mask = torch.stack([box_mask(1, height, width, box) for box in query_boxes])
    masked = memory_read(
        query_key,
        memory_key,
        memory_value,
        memory_mask=memory_mask,
        query_mask=query_mask,
        similarity="l2",
        backend=backend,
    )
    for b in range(2):
        cropped = memory_read(
            query_key[b : b + 1, :, query_mask[b]],
            memory_key[b : b + 1, :, memory_mask[b]],
            memory_value[b : b + 1, :, memory_mask[b]],
            similarity="l2",
            backend=backend,
        )
        scattered = torch.zeros(1, 5, height * width)
        scattered[:, :, query_mask[b]] = cropped
        torch.testing.assert_close(masked[b : b + 1], scattered, **FP32_TOLERANCE)


@interpreter_only
def test_masked_blocks_are_skipped_not_computed():
    """Count the (query block, memory block) pairs the forward computes: only those with a valid
    pixel on both sides. B=2, M=37 (3 query blocks), N=53 (4 memory blocks, the last partial)."""
    query_key, memory_key, memory_value = make_inputs(2, 4, 6, 53, 37, seed=8)
    memory_mask = torch.zeros(2, 53, dtype=torch.bool)
    memory_mask[0, 20:30] = True  # memory blocks 1 only
    memory_mask[0, 50] = True  # and 3 (the partial one)
    memory_mask[1, 5:40] = True  # memory blocks 0, 1, 2
    query_mask = torch.zeros(2, 37, dtype=torch.bool)
    query_mask[0, 17:19] = True  # query block 1
    query_mask[1, 32:37] = True  # query block 2 (the partial one)
    counter = torch.zeros(1, dtype=torch.int32)
    readout = memory_read_triton(
        query_key,
        memory_key,
        memory_value,
        memory_mask=memory_mask,
        query_mask=query_mask,
        block_counter=counter,
    )

    def live_blocks(mask, block):
        padded = torch.nn.functional.pad(mask, (0, -mask.shape[1] % block))
        return padded.view(mask.shape[0], -1, block).any(dim=2).sum(dim=1)

    expected = live_blocks(query_mask, INTERPRETER_BLOCK_M) * live_blocks(
        memory_mask, INTERPRETER_BLOCK_N
    )
    assert expected.tolist() == [2, 3]
    assert counter.item() == expected.sum().item()  # a dense read would compute 2·3·4 = 24
    reference = memory_read(
        query_key,
        memory_key,
        memory_value,
        memory_mask=memory_mask,
        query_mask=query_mask,
        backend="torch",
    )
    torch.testing.assert_close(readout, reference, **FP32_TOLERANCE)


@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_nan_outside_the_mask_never_reaches_the_output(similarity):
    """Whole blocks outside the mask are never loaded (skipped), and masked pixels inside a
    computed block are loaded as zeros: NaN keys/values there change nothing, forward or backward."""
    memories = 4 * INTERPRETER_BLOCK_N + 3
    query_key, memory_key, memory_value = make_inputs(2, 4, 6, memories, 21, seed=9)
    memory_mask = torch.zeros(2, memories, dtype=torch.bool)
    memory_mask[:, INTERPRETER_BLOCK_N : 2 * INTERPRETER_BLOCK_N] = True  # one whole block
    memory_mask[:, 2 * INTERPRETER_BLOCK_N + 3 : 2 * INTERPRETER_BLOCK_N + 9] = True  # part of one
    memory_mask[1, -1] = True  # the last partial block
    query_mask = torch.rand(2, 21, generator=torch.Generator().manual_seed(9)) > 0.3
    poisoned_key = memory_key.masked_fill(~memory_mask.unsqueeze(1), float("nan"))
    poisoned_value = memory_value.masked_fill(~memory_mask.unsqueeze(1), float("nan"))
    poisoned_query = query_key.masked_fill(~query_mask.unsqueeze(1), float("nan"))
    grad_readout = torch.randn(2, 6, 21)
    options = dict(similarity=similarity, memory_mask=memory_mask, query_mask=query_mask)
    kernel = read_with_grads(
        poisoned_query, poisoned_key, poisoned_value, grad_readout, backend="triton", **options
    )
    clean = read_with_grads(
        query_key, memory_key, memory_value, grad_readout, backend="torch", **options
    )
    assert all(torch.isfinite(t).all() for t in kernel)
    assert_all_close(kernel, clean, **FP32_TOLERANCE)


def test_gaussian_bias_is_hmmns_normalised_kernel():
    """softmax(S + log G) = L1-normalise over memory of G ⊙ softmax(S) (HMMN §3.1), in fp64."""
    query_key, memory_key, memory_value = make_inputs(2, 5, 3, 13, 12, seed=10, dtype=torch.float64)
    query_hw = (3, 4)
    centers, sigma = (t.double() for t in random_gaussian(2, 13, query_hw, seed=10))
    readout = memory_read(
        query_key,
        memory_key,
        memory_value,
        gaussian_centers=centers,
        gaussian_sigma=sigma,
        query_hw=query_hw,
    )
    # explicit HMMN: G[n, m] = exp(−((y_m − cy_n)² + (x_m − cx_n)²) / (2 σ_n²))
    ys, xs = torch.meshgrid(torch.arange(3.0), torch.arange(4.0), indexing="ij")
    y_m, x_m = ys.flatten().double(), xs.flatten().double()
    squared = (y_m - centers[..., :1]) ** 2 + (x_m - centers[..., 1:]) ** 2  # [B, N, M]
    kernel = torch.exp(-squared / (2 * sigma.unsqueeze(2) ** 2))
    weights = kernel * torch.softmax(affinity_logits(query_key, memory_key), dim=1)
    weights = weights / weights.sum(dim=1, keepdim=True)
    torch.testing.assert_close(readout, torch.bmm(memory_value, weights))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_gaussian_with_huge_sigma_equals_no_bias(backend):
    query_key, memory_key, memory_value = make_inputs(**SHAPE, seed=11)
    centers, _ = random_gaussian(SHAPE["batch"], SHAPE["memories"], QUERY_HW)
    sigma = torch.full((SHAPE["batch"], SHAPE["memories"]), 1e4)  # G ≈ 1 everywhere
    biased = memory_read(
        query_key,
        memory_key,
        memory_value,
        gaussian_centers=centers,
        gaussian_sigma=sigma,
        query_hw=QUERY_HW,
        backend=backend,
    )
    plain = memory_read(query_key, memory_key, memory_value, backend=backend)
    torch.testing.assert_close(biased, plain, atol=1e-5, rtol=1e-5)


def test_kernel_gaussian_equals_reference_dense_bias():
    """The fused Gaussian equals the reference with the materialised log G as a bias."""
    query_key, memory_key, memory_value = make_inputs(**SHAPE, seed=12)
    centers, sigma = random_gaussian(SHAPE["batch"], SHAPE["memories"], QUERY_HW, seed=12)
    log_kernel = gaussian_log_bias(centers, sigma, query_grid_positions(QUERY_HW).unsqueeze(0))
    fused = memory_read(
        query_key,
        memory_key,
        memory_value,
        gaussian_centers=centers,
        gaussian_sigma=sigma,
        query_hw=QUERY_HW,
        backend="triton",
    )
    dense = memory_read(query_key, memory_key, memory_value, bias=log_kernel, backend="torch")
    torch.testing.assert_close(fused, dense, **FP32_TOLERANCE)
    zero_bias = memory_read(query_key, memory_key, memory_value, bias=torch.zeros_like(log_kernel))
    torch.testing.assert_close(zero_bias, memory_read(query_key, memory_key, memory_value))


@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_gradcheck_reference_with_masks_bias_and_gaussian(similarity):
    g = torch.Generator().manual_seed(13)

    def leaf(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

    query_key, memory_key, memory_value = leaf(2, 3, 6), leaf(2, 3, 7), leaf(2, 2, 7)
    bias = leaf(2, 7, 6)
    centers = (torch.rand(2, 7, 2, generator=g, dtype=torch.float64) * 3).requires_grad_()
    sigma = (0.8 + torch.rand(2, 7, generator=g, dtype=torch.float64)).requires_grad_()
    memory_mask = torch.tensor([[1, 0, 1, 1, 0, 1, 1], [0] * 7], dtype=torch.bool)  # 2nd empty
    query_mask = torch.tensor([[1, 1, 0, 1, 1, 1], [1, 0, 1, 1, 1, 1]], dtype=torch.bool)

    def read(*inputs):
        return memory_read(
            *inputs[:3],
            bias=inputs[3],
            gaussian_centers=inputs[4],
            gaussian_sigma=inputs[5],
            query_hw=(2, 3),
            memory_mask=memory_mask,
            query_mask=query_mask,
            similarity=similarity,
        )

    assert torch.autograd.gradcheck(
        read, (query_key, memory_key, memory_value, bias, centers, sigma)
    )


def test_return_top_on_a_hand_made_case():
    # Ck = 1, scale 1: S[n, m] = k_n · q_m with k = (0, 1, 2, 3) and q = (1, −1)
    query_key = torch.tensor([[[1.0, -1.0]]])
    memory_key = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]])
    memory_value = torch.randn(1, 2, 4, generator=torch.Generator().manual_seed(14))
    readout, values, indices = memory_read(
        query_key, memory_key, memory_value, scale=1.0, return_top=2
    )
    torch.testing.assert_close(values, torch.tensor([[[3.0, 2.0], [0.0, -1.0]]]))
    assert indices.tolist() == [[[3, 2], [0, 1]]]
    torch.testing.assert_close(readout, memory_read(query_key, memory_key, memory_value, scale=1.0))
    # memory pixel 2 masked out, only 3 valid for k = 4; query pixel 1 masked out
    _, values, indices = memory_read(
        query_key,
        memory_key,
        memory_value,
        scale=1.0,
        return_top=4,
        memory_mask=torch.tensor([[True, True, False, True]]),
        query_mask=torch.tensor([[True, False]]),
    )
    inf = float("inf")
    torch.testing.assert_close(values, torch.tensor([[[3.0, 1.0, 0.0, -inf], [-inf] * 4]]))
    assert indices.tolist() == [[[3, 1, 0, -1], [-1] * 4]]
    # the bias counts: +10 on memory pixel 0 makes it the best for both query pixels
    bias = torch.zeros(1, 4, 2)
    bias[0, 0] = 10.0
    _, values, indices = memory_read(
        query_key, memory_key, memory_value, scale=1.0, return_top=1, bias=bias
    )
    torch.testing.assert_close(values, torch.tensor([[[10.0], [10.0]]]))
    assert indices.tolist() == [[[0], [0]]]


def test_top_k_keeps_ties_and_falls_back_to_the_reference():
    # S = (1, 1, 1, 0): top_k = 2 keeps all three pixels tied at the 2nd value
    query_key = torch.ones(1, 1, 1)
    memory_key = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]])
    memory_value = torch.tensor([[[3.0, 6.0, 9.0, 100.0]]])
    readout = memory_read(query_key, memory_key, memory_value, top_k=2, scale=1.0)
    torch.testing.assert_close(readout, torch.tensor([[[6.0]]]))
    # top_k >= N is the full softmax, which the kernel runs
    query_key, memory_key, memory_value = make_inputs(**SHAPE, seed=15)
    full = memory_read(query_key, memory_key, memory_value, backend="triton")
    for top_k in (SHAPE["memories"], 100):
        truncated = memory_read(query_key, memory_key, memory_value, top_k=top_k, backend="triton")
        torch.testing.assert_close(truncated, full)
    # the kernel's running top-k is one memory block wide (16 under the interpreter)
    limit = kernels.max_top_k(query_key.dtype, query_key.device)
    if limit + 1 < SHAPE["memories"]:
        with pytest.raises(BackendError, match=f"top_k={limit + 1} > {limit}"):
            memory_read(query_key, memory_key, memory_value, top_k=limit + 1, backend="triton")
    # return_top runs on the kernel (`vos.kernels.memory_top`) up to its running list's size
    with pytest.raises(BackendError, match="return_top=65 > 64"):
        many = make_inputs(**{**SHAPE, "memories": 70}, seed=15)
        memory_read(*many, return_top=65, backend="triton")
    with pytest.raises(BackendError, match="bias"):
        bias = torch.zeros(SHAPE["batch"], SHAPE["memories"], SHAPE["queries"])
        memory_read(query_key, memory_key, memory_value, bias=bias, backend="triton")
    # "auto" on CPU tensors takes the reference, which supports everything
    auto = memory_read(query_key, memory_key, memory_value, top_k=3)
    torch.testing.assert_close(
        auto, memory_read(query_key, memory_key, memory_value, top_k=3, backend="torch")
    )


# the default run keeps two combinations (dot and l2, with and without masks and the Gaussian,
# k = 5 and 16); the rest run with -m slow
_TOP_K_FAST = {
    ("dot", "plain", 5),
    ("l2", "gaussian+memory_mask+query_mask", 16),
}
TOP_K_CASES = [
    pytest.param(
        similarity,
        case,
        top_k,
        marks=() if (similarity, case, top_k) in _TOP_K_FAST else pytest.mark.slow,
        id=f"{top_k}-{case}-{similarity}",
    )
    for similarity in ("dot", "l2")
    for case in ("plain", "gaussian+memory_mask+query_mask")
    for top_k in (1, 5, INTERPRETER_BLOCK_N)
]


@pytest.mark.parametrize("similarity, case, top_k", TOP_K_CASES)
def test_kernel_top_k_matches_reference(similarity, case, top_k):
    """STCN's truncated softmax in the kernel: a running top-k over memory blocks (3 blocks
    here), forward and gradients equal to the reference's topk-then-softmax."""
    query_key, memory_key, memory_value = make_inputs(**SHAPE, seed=21)
    grad_readout = torch.randn(SHAPE["batch"], SHAPE["value_channels"], SHAPE["queries"])
    options = dict(similarity=similarity, top_k=top_k, **case_options(case, seed=21))
    kernel = read_with_grads(
        query_key, memory_key, memory_value, grad_readout, backend="triton", **options
    )
    reference = read_with_grads(
        query_key, memory_key, memory_value, grad_readout, backend="torch", **options
    )
    assert_all_close(kernel, reference, **FP32_TOLERANCE)
    # and it is truncated: the full softmax differs
    full = memory_read(
        query_key, memory_key, memory_value, **{**options, "top_k": None}, backend="triton"
    )
    assert (full - kernel[0]).abs().max() > 1e-3


def test_kernel_top_k_keeps_ties():
    # S = (1, 1, 1, 0) over two memory blocks: top_k = 2 keeps all three tied pixels
    memories = INTERPRETER_BLOCK_N + 4
    query_key = torch.ones(1, 1, 1)
    memory_key = torch.full((1, 1, memories), -5.0)
    memory_value = torch.zeros(1, 1, memories)
    for pixel, value in ((1, 3.0), (INTERPRETER_BLOCK_N - 1, 6.0), (INTERPRETER_BLOCK_N + 2, 9.0)):
        memory_key[0, 0, pixel] = 1.0
        memory_value[0, 0, pixel] = value
    readout = memory_read_triton(query_key, memory_key, memory_value, top_k=2, scale=1.0)
    torch.testing.assert_close(readout, torch.tensor([[[6.0]]]))


@pytest.mark.parametrize("pixels", [INTERPRETER_BLOCK_N + 5, 2 * INTERPRETER_BLOCK_N])
def test_padded_rows_are_read_as_the_kernels_layout(pixels):
    """The kernels address [B, C, P] tensors with rows padded to 16 pixels (`pad_pixels`) and,
    without masks, load whole padded rows: the padding they are given must be zeros, and a
    tensor already laid out so is not copied."""
    x = torch.randn(2, 3, pixels)
    padded = kernels.pad_pixels(x)
    stride = kernels.padded_pixels(pixels)
    assert stride % 16 == 0 and stride - pixels < 16
    assert padded.stride() == (3 * stride, stride, 1)
    torch.testing.assert_close(padded, x)
    if pixels == stride:
        assert padded.data_ptr() == x.data_ptr()  # no copy
    else:
        tail = torch.as_strided(padded, (2, 3, stride - pixels), padded.stride(), pixels)
        assert tail.eq(0).all()
    # a non-contiguous tensor (channels sliced) is copied into the layout
    wide = torch.randn(2, 5, pixels)[:, 1:4]
    torch.testing.assert_close(kernels.pad_pixels(wide), wide)


def test_kernel_reads_non_contiguous_inputs():
    query_key, memory_key, memory_value = make_inputs(**dict(SHAPE, key_channels=16), seed=22)
    # every other key channel: strided views, which the wrapper lays out again
    query_key, memory_key = query_key[:, ::2], memory_key[:, ::2]
    kernel = memory_read(query_key, memory_key, memory_value, backend="triton")
    reference = memory_read(query_key, memory_key, memory_value, backend="torch")
    torch.testing.assert_close(kernel, reference, **FP32_TOLERANCE)


@interpreter_only
def test_tf32_follows_pytorchs_switch(monkeypatch):
    """fp32 products use TF32 tensor cores on a CUDA device exactly when PyTorch allows TF32
    for matmuls; fp16/bf16 and the interpreter are unaffected. (`vos.bench kernels` compiles
    the "tf32" variants and counts their MMA instructions.)"""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(kernels, "_interpreting", lambda: False)
    monkeypatch.setattr(kernels, "tf32_allowed", lambda: True)
    assert kernels.dot_precision(torch.float32, cuda) == "tf32"
    assert kernels.dot_precision(torch.float32, cpu) == "ieee"
    assert kernels.dot_precision(torch.float16, cuda) == "ieee"  # ignored: tensor cores anyway
    assert kernels.dot_precision(torch.float32, cuda, tf32=False) == "ieee"
    monkeypatch.setattr(kernels, "tf32_allowed", lambda: False)
    assert kernels.dot_precision(torch.float32, cuda) == "ieee"
    assert kernels.dot_precision(torch.float32, cuda, tf32=True) == "tf32"
    monkeypatch.undo()
    assert kernels.dot_precision(torch.float32, cuda, tf32=True) == "ieee"  # interpreter
    # PyTorch's own switch, by both of its APIs
    previous = torch.backends.cuda.matmul.fp32_precision
    try:
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        assert kernels.tf32_allowed()
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        assert not kernels.tf32_allowed()
    finally:
        torch.backends.cuda.matmul.fp32_precision = previous


def test_reference_chunks_over_queries():
    query_key, memory_key, memory_value = make_inputs(**SHAPE, seed=16, dtype=torch.float64)
    options = dict(
        similarity="l2",
        return_top=3,
        top_k=5,
        **case_options("gaussian+memory_mask+query_mask", seed=16),
    )
    options["gaussian_centers"] = options["gaussian_centers"].double()
    options["gaussian_sigma"] = options["gaussian_sigma"].double()
    whole = memory_read(query_key, memory_key, memory_value, **options)
    chunked = memory_read(query_key, memory_key, memory_value, chunk_elements=7, **options)
    for a, b in zip(chunked, whole):
        torch.testing.assert_close(a, b)


def test_bad_inputs_get_clear_errors():
    query_key, memory_key, memory_value = make_inputs(**SHAPE)
    batch, memories, queries = SHAPE["batch"], SHAPE["memories"], SHAPE["queries"]
    centers, sigma = random_gaussian(batch, memories, QUERY_HW)
    cases = [
        (
            dict(memory_mask=torch.ones(batch, memories + 1, dtype=torch.bool)),
            "memory_mask must have shape",
        ),
        (
            dict(query_mask=torch.ones(batch, memories, dtype=torch.bool)),
            "query_mask must have shape",
        ),
        (dict(memory_mask=torch.ones(batch, memories)), "memory_mask must be a bool"),
        (dict(bias=torch.zeros(batch, queries, memories)), "bias must have shape"),
        (dict(gaussian_centers=centers, gaussian_sigma=sigma), "needs query_hw"),
        (dict(gaussian_centers=centers, query_hw=QUERY_HW), "given together"),
        (dict(gaussian_centers=centers, gaussian_sigma=sigma, query_hw=(4, 5)), "does not match"),
        (
            dict(gaussian_centers=centers[:, :, :1], gaussian_sigma=sigma, query_hw=QUERY_HW),
            "gaussian_centers must have shape",
        ),
        (dict(return_top=memories + 1), "return_top"),
        (dict(top_k=0), "top_k"),
        (dict(similarity="cosine"), "unknown similarity"),
    ]
    for options, message in cases:
        for backend in ("torch", "triton"):
            with pytest.raises(ValueError, match=message):
                memory_read(query_key, memory_key, memory_value, backend=backend, **options)
    with pytest.raises(ValueError, match=r"\[B, C, pixels\]"):
        memory_read(query_key[0], memory_key, memory_value)
    with pytest.raises(TypeError, match="share one dtype"):
        memory_read_triton(query_key, memory_key.half(), memory_value)


def test_cost_counts_only_the_computed_blocks():
    dense = memory_read_cost(1, 128, 512, 5 * 30 * 54, 30 * 54, 4)
    assert dense["flops"] == 2 * 8100 * 1620 * (128 + 512)
    boxed = memory_read_cost(1, 128, 512, 8100, 1620, 4, memory_fraction=0.2, query_fraction=0.2)
    assert math.isclose(dense["flops"] / boxed["flops"], 25.0)
    assert boxed["bytes"] < dense["bytes"]
