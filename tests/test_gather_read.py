"""`vos.ops.gather_read`: the reference's identities and gradients, and the Triton kernel
(run by Triton's interpreter on the CPU) against the reference, forward and backward.

Tolerances: float64 references agree to 1e-10; the fp32 kernel matches the fp32 reference
within atol = rtol = 1e-4 (here it agrees to ~1e-6); for fp16/bf16 inputs the kernel's error
against a float64 reference (on the same rounded inputs) is at most twice the error of the
PyTorch reference run in that precision, plus 1e-6.
"""

import importlib
import math

import pytest
import torch

from vos.ops.dispatch import BackendError
from vos.ops.gather_read import gather_read, gather_read_cost
from vos.ops.memory_read import memory_read

# VOS_TEST_DEVICE=cuda (`make gpu-check`) runs these tests on the GPU (conftest)
pytestmark = pytest.mark.usefixtures("tensors_on_test_device")

# odd sizes on purpose: none is a multiple of the interpreter config's blocks (4 / 8)
B, CK, CV, N, M, K = 2, 6, 11, 23, 13, 11
GROUPS, GROUP_SIZE = 5, 3


def make_inputs(
    grouped: bool, seed: int = 0, dtype=torch.float64, missing=True, value_channels=CV, n=N
):
    """query/memory tensors and an index with −1 entries, duplicates and an empty row."""
    g = torch.Generator().manual_seed(seed)
    query_shape = (B, CK, GROUPS, GROUP_SIZE) if grouped else (B, CK, M)
    rows = GROUPS if grouped else M
    query = torch.randn(query_shape, generator=g, dtype=dtype)
    memory_key = torch.randn(B, CK, n, generator=g, dtype=dtype)
    memory_value = torch.randn(B, value_channels, n, generator=g, dtype=dtype)
    index = torch.randint(0, n, (B, rows, K), generator=g)
    index[0, 1, 2] = index[0, 1, 1]  # a duplicate within one block of candidates
    index[1, 0, 9] = index[1, 0, 0]  # and across blocks
    if missing:
        index[0, 2, ::3] = -1  # some candidates missing
        index[1, rows - 1] = -1  # a row with none: reads 0
    return query, memory_key, memory_value, index


def grads(fn, inputs, seed=1):
    """Output and gradients w.r.t. every input of a random projection of the output."""
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*inputs)
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    return (out, *torch.autograd.grad(out, inputs, weight))


# --- the reference ---------------------------------------------------------------------


@pytest.mark.parametrize("similarity", ["dot", "l2"])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_top_k_with_k_equal_all_is_the_dense_read(similarity, backend):
    query, memory_key, memory_value, _ = make_inputs(grouped=False)
    if backend == "triton":
        query, memory_key, memory_value = (x.float() for x in (query, memory_key, memory_value))
    every_pixel = torch.arange(N).expand(B, M, N)
    out = gather_read(
        query, memory_key, memory_value, every_pixel, similarity=similarity, backend=backend
    )
    dense = memory_read(query, memory_key, memory_value, similarity=similarity)
    assert out.shape == (B, CV, M)
    tol = 1e-10 if backend == "torch" else 1e-5
    torch.testing.assert_close(out, dense, atol=tol, rtol=tol)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_grouped_equals_plain_with_the_index_repeated(backend):
    query, memory_key, memory_value, index = make_inputs(grouped=True, dtype=torch.float32)
    grouped = gather_read(query, memory_key, memory_value, index, backend=backend)
    plain_query = query.reshape(B, CK, GROUPS * GROUP_SIZE)
    plain_index = index.repeat_interleave(GROUP_SIZE, dim=1)  # [B, G·g, K]
    plain = gather_read(plain_query, memory_key, memory_value, plain_index, backend=backend)
    assert grouped.shape == (B, CV, GROUPS, GROUP_SIZE)
    torch.testing.assert_close(grouped.reshape(B, CV, -1), plain, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_two_candidates_with_known_weights(backend):
    # scale 1, q = 1, keys 0 and ln 3: weights exp(0) : exp(ln 3) = 1/4 : 3/4
    query = torch.ones(1, 1, 1)
    memory_key = torch.tensor([[[0.0, 5.0, math.log(3.0)]]])
    memory_value = torch.tensor([[[4.0, -100.0, 8.0], [1.0, -100.0, -1.0]]])
    index = torch.tensor([[[0, 2]]])
    out = gather_read(query, memory_key, memory_value, index, scale=1.0, backend=backend)
    expected = torch.tensor([[[0.25 * 4 + 0.75 * 8], [0.25 * 1 - 0.75 * 1]]])
    torch.testing.assert_close(out, expected)
    # a duplicated candidate counts twice: weights 1 : 3 : 3
    out = gather_read(
        query, memory_key, memory_value, torch.tensor([[[0, 2, 2]]]), scale=1.0, backend=backend
    )
    expected = torch.tensor([[[(4 + 3 * 8 + 3 * 8) / 7], [(1 - 3 - 3) / 7]]])
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_missing_candidates_are_excluded(backend):
    query, memory_key, memory_value, index = make_inputs(
        grouped=False, dtype=torch.float32, missing=False
    )
    with_missing = index.clone()
    with_missing[:, :, 4:] = -1
    out = gather_read(query, memory_key, memory_value, with_missing, backend=backend)
    fewer = gather_read(query, memory_key, memory_value, index[:, :, :4], backend=backend)
    torch.testing.assert_close(out, fewer, atol=1e-6, rtol=1e-6)

    # a row with no candidate reads 0 and sends no gradient anywhere (no NaN)
    with_missing[0, 5] = -1
    out, query_grad, key_grad, value_grad = grads(
        lambda q, k, v: gather_read(q, k, v, with_missing, backend=backend),
        (query, memory_key, memory_value),
    )
    assert torch.all(out[0, :, 5] == 0)
    assert torch.all(query_grad[0, :, 5] == 0)
    assert all(torch.isfinite(x).all() for x in (query_grad, key_grad, value_grad))

    # no candidates at all (K = 0) reads 0
    empty = index[:, :, :0]
    assert torch.all(gather_read(query, memory_key, memory_value, empty, backend=backend) == 0)


# the reference's two forms of Σ_k w_k v_k, picked by how many value channels per group pixel
# (`_MATMUL_VALUES_PER_GROUP_PIXEL`): 0 = embedding_bag always, a large one = the matrix product
VALUE_SUM_FORMS = {"embedding_bag": 0, "matmul": 1 << 30}


def _value_sum_form(monkeypatch, form: str) -> None:
    module = importlib.import_module("vos.ops.gather_read")
    monkeypatch.setattr(module, "_MATMUL_VALUES_PER_GROUP_PIXEL", VALUE_SUM_FORMS[form])


@pytest.mark.parametrize("grouped", [False, True])
def test_reference_value_sum_forms_agree(monkeypatch, grouped):
    """Σ_k w_k v_k by embedding_bag and by a matrix product over the candidate values gathered
    once per group: the same readout and gradients, with duplicates, missing candidates and
    a query with none."""
    inputs = make_inputs(grouped)
    results = {}
    for form in VALUE_SUM_FORMS:
        _value_sum_form(monkeypatch, form)
        results[form] = grads(
            lambda q, k, v: gather_read(q, k, v, inputs[3], backend="torch"), inputs[:3]
        )
    for by_bags, by_matmul in zip(results["embedding_bag"], results["matmul"]):
        torch.testing.assert_close(by_matmul, by_bags, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("form", list(VALUE_SUM_FORMS))
@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_reference_gradcheck(monkeypatch, grouped, similarity, form):
    _value_sum_form(monkeypatch, form)
    # fewer memory pixels and value channels: gradcheck perturbs every element
    query, memory_key, memory_value, index = make_inputs(grouped, value_channels=3, n=9)
    inputs = [x.requires_grad_() for x in (query, memory_key, memory_value)]
    assert torch.autograd.gradcheck(
        lambda q, k, v: gather_read(q, k, v, index, similarity=similarity, backend="torch"),
        inputs,
    )


def test_reference_chunks_agree(monkeypatch):
    """Chunking over query rows (to bound memory) does not change the result."""
    # the module, not the function that vos.ops re-exports under the same name
    module = importlib.import_module("vos.ops.gather_read")

    query, memory_key, memory_value, index = make_inputs(grouped=False)
    whole = gather_read(query, memory_key, memory_value, index, backend="torch")
    monkeypatch.setattr(module, "_REFERENCE_CHUNK_ELEMENTS", 1)  # one row per chunk
    chunked = gather_read(query, memory_key, memory_value, index, backend="torch")
    torch.testing.assert_close(chunked, whole, atol=1e-12, rtol=1e-12)


# --- the kernel against the reference ------------------------------------------------------


def max_error(result, expected):
    return max((r.double() - e).abs().max().item() for r, e in zip(result, expected))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("similarity", ["dot", "l2"])
@pytest.mark.parametrize("grouped", [False, True])
def test_kernel_matches_reference(grouped, similarity, dtype):
    inputs = [x.to(dtype) for x in make_inputs(grouped, seed=3)[:3]]
    index = make_inputs(grouped, seed=3)[3]

    def read(backend):
        return lambda q, k, v: gather_read(q, k, v, index, similarity=similarity, backend=backend)

    exact = grads(read("torch"), [x.double() for x in inputs])  # the same rounded inputs
    kernel = grads(read("triton"), inputs)
    reference = grads(read("torch"), inputs)
    for result in (kernel, reference):
        assert [x.dtype for x in result] == [dtype] * 4
        assert [x.shape for x in result] == [x.shape for x in exact]
    if dtype == torch.float32:
        for k, r in zip(kernel, reference):
            torch.testing.assert_close(k, r, atol=1e-4, rtol=1e-4)
    else:
        for name, k, r, e in zip(("readout", "dq", "dk", "dv"), kernel, reference, exact):
            kernel_error, reference_error = max_error([k], [e]), max_error([r], [e])
            assert kernel_error <= 2 * reference_error + 1e-6, (name, kernel_error, reference_error)


def test_kernel_reads_pixel_major_memory_in_place():
    """Memory laid out pixel by pixel (`MemoryBank.keys(..., pixel_major=True)`; here with
    spare rows between the batch elements, as a kept stack has) is read where it lies, not
    copied, and reads and differentiates as the same memory channel-major."""
    from vos.kernels.gather_read import _pixel_rows

    query, key, value, index = make_inputs(grouped=True, seed=5, dtype=torch.float32)

    def pixel_major(memory):
        store = torch.zeros(B, N + 4, memory.shape[1], dtype=memory.dtype)
        store[:, :N] = memory.transpose(1, 2)
        return store.requires_grad_()[:, :N].transpose(1, 2)  # [B, C, N], channel stride 1

    query.requires_grad_()
    laid_out = [pixel_major(key), pixel_major(value)]
    for memory in laid_out:
        assert _pixel_rows(memory).data_ptr() == memory.data_ptr()
    assert _pixel_rows(key).data_ptr() != key.data_ptr()  # channel-major: the rows are a copy
    kernel_readout = gather_read(query, *laid_out, index, backend="triton")
    reference_readout = gather_read(query, key.requires_grad_(), value.requires_grad_(), index)
    torch.testing.assert_close(kernel_readout, reference_readout, atol=1e-4, rtol=1e-4)
    weight = torch.randn(kernel_readout.shape, generator=torch.Generator().manual_seed(1))
    kernel = torch.autograd.grad(kernel_readout, [query, *laid_out], weight)
    reference = torch.autograd.grad(reference_readout, [query, key, value], weight)
    for k, r in zip(kernel, reference):
        torch.testing.assert_close(k, r, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("similarity", ["dot", "l2"])
@pytest.mark.parametrize("group_size", [4, 16])
def test_grouped_kernel_across_blocks(group_size, similarity, dtype):
    """The grouped kernel's matrix products with every tile boundary crossed: 40 candidates
    (three blocks of 16 under the interpreter, −1s in two), Ck = 20 and Cv = 40 (masked
    channels, three value blocks), HMMN's res3 (g = 4: 12 of 16 rows padding) and res2
    (g = 16) groups."""
    g = torch.Generator().manual_seed(11)
    groups, candidates, ck, cv, n = 3, 40, 20, 40, 50
    query = torch.randn(B, ck, groups, group_size, generator=g, dtype=torch.float64)
    memory_key = torch.randn(B, ck, n, generator=g, dtype=torch.float64)
    memory_value = torch.randn(B, cv, n, generator=g, dtype=torch.float64)
    index = torch.randint(0, n, (B, groups, candidates), generator=g)
    index[0, 1, 17:35] = -1  # a whole block and parts of two
    index[1, 2, ::5] = -1
    inputs = [x.to(dtype) for x in (query, memory_key, memory_value)]

    def read(backend):
        return lambda q, k, v: gather_read(q, k, v, index, similarity=similarity, backend=backend)

    kernel = grads(read("triton"), inputs)
    reference = grads(read("torch"), inputs)
    if dtype == torch.float32:
        for k, r in zip(kernel, reference):
            torch.testing.assert_close(k, r, atol=1e-4, rtol=1e-4)
        return
    exact = grads(read("torch"), [x.double() for x in inputs])
    for name, k, r, e in zip(("readout", "dq", "dk", "dv"), kernel, reference, exact):
        kernel_error, reference_error = max_error([k], [e]), max_error([r], [e])
        assert kernel_error <= 2 * reference_error + 1e-6, (name, kernel_error, reference_error)


@pytest.mark.parametrize("grouped", [False, True])
def test_kernel_mixed_dtypes(grouped):
    """fp16 queries against an fp32 memory (autocast-style): each tensor read in its dtype."""
    query, memory_key, memory_value, index = make_inputs(grouped, seed=5)
    inputs = [query.half(), memory_key.float(), memory_value.float()]

    def read(backend):
        return lambda q, k, v: gather_read(q, k, v, index, similarity="l2", backend=backend)

    exact = grads(read("torch"), [x.double() for x in inputs])
    kernel = grads(read("triton"), inputs)
    reference = grads(read("torch"), inputs)
    assert [x.dtype for x in kernel] == [torch.float32, torch.float16, torch.float32, torch.float32]
    for name, k, r, e in zip(("readout", "dq", "dk", "dv"), kernel, reference, exact):
        kernel_error, reference_error = max_error([k], [e]), max_error([r], [e])
        assert kernel_error <= 2 * reference_error + 1e-5, (name, kernel_error, reference_error)


def test_kernel_duplicates_accumulate_in_backward():
    """Every candidate slot is the same memory pixel: its grads are the sums over all slots."""
    query, memory_key, memory_value, _ = make_inputs(grouped=False, dtype=torch.float32)
    index = torch.full((B, M, K), 7)
    index[:, :, ::2] = 3
    kernel = grads(lambda q, k, v: gather_read(q, k, v, index, backend="triton"),
                   (query, memory_key, memory_value))  # fmt: skip
    reference = grads(lambda q, k, v: gather_read(q, k, v, index, backend="torch"),
                      (query, memory_key, memory_value))  # fmt: skip
    for k, r in zip(kernel, reference):
        torch.testing.assert_close(k, r, atol=1e-4, rtol=1e-4)
    assert kernel[3][:, :, [3, 7]].abs().sum() > 0
    assert torch.all(kernel[3][:, :, [0, 1, 2, 4, 5, 6]] == 0)


def test_pairs_sorted_by_memory_pixel_are_each_pixels_readers_in_order():
    """The memory-side backward sums a pixel's (row, candidate) pairs in this order."""
    pytest.importorskip("triton")
    from vos.kernels.gather_read import pairs_by_memory_pixel

    index = make_inputs(grouped=True, seed=7)[3]  # −1 entries and duplicates
    order, segments = pairs_by_memory_pixel(index, N)
    assert order.shape == (B, GROUPS * K) and segments.shape == (B, N + 1)
    flat = index.reshape(B, -1)
    for b in range(B):
        assert segments[b, 0] == int((flat[b] == -1).sum()) and segments[b, -1] == flat.shape[1]
        for n in range(N):
            run = order[b, segments[b, n] : segments[b, n + 1]]
            assert torch.equal(run, (flat[b] == n).nonzero().flatten())  # all, ascending


@pytest.mark.parametrize("grouped", [False, True])
def test_kernel_backward_is_deterministic(grouped):
    """No atomic adds: two backward passes give bit-identical gradients (on a GPU too, under
    `make gpu-check`, where atomics would reorder the sums)."""
    query, memory_key, memory_value, index = make_inputs(grouped, seed=8, dtype=torch.float32)
    index = index.clamp_min(0) % 3  # many readers per memory pixel
    runs = [
        grads(
            lambda q, k, v: gather_read(q, k, v, index, backend="triton"),
            (query, memory_key, memory_value),
        )  # fmt: skip
        for _ in range(2)
    ]
    for first, second in zip(*runs):
        assert torch.equal(first, second)


# --- errors, dispatch, cost ------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda q, k, v, i: (q[:, :, 0, 0], k, v, i), ValueError, r"\[B, Ck, M\]"),
        (lambda q, k, v, i: (q, k, v, i[:, :4]), ValueError, r"index .* must be \[B, G, K\]"),
        (lambda q, k, v, i: (q, k, v, i[..., 0]), ValueError, r"must be \[B, G, K\]"),
        (lambda q, k, v, i: (q, k, v[:, :, :-1], i), ValueError, r"must share \[B, ·, N\]"),
        (lambda q, k, v, i: (q[:, :-1], k, v, i), ValueError, r"must share \[B, Ck\]"),
        (lambda q, k, v, i: (q, k, v, i.float()), TypeError, "index must be int64"),
        (lambda q, k, v, i: (q, k, v, i.clamp_min(0) + N - 1), ValueError, r"\[-1, 23\)"),
        (lambda q, k, v, i: (q, k, v, i - 1), ValueError, "got values from -2"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, error, message):
    query, memory_key, memory_value, index = change(*make_inputs(grouped=True))
    for backend in ("torch", "triton"):
        with pytest.raises(error, match=message):
            gather_read(query, memory_key, memory_value, index, backend=backend)


def test_index_range_check_can_be_skipped_without_a_min_max(monkeypatch):
    # the range check is one min/max (a host sync on a GPU): checked by default, skipped
    # when the caller vouches for the index (HMMN's top-k positions)
    query, memory_key, memory_value, index = make_inputs(grouped=True)
    expected = gather_read(query, memory_key, memory_value, index, backend="torch")

    def no_min_max(*args, **kwargs):
        raise AssertionError("aminmax called")

    monkeypatch.setattr(torch, "aminmax", no_min_max)
    with pytest.raises(AssertionError, match="aminmax called"):
        gather_read(query, memory_key, memory_value, index, backend="torch")
    for backend in ("torch", "triton"):
        inputs = (query, memory_key, memory_value, index)
        if backend == "triton":
            inputs = tuple(t.float() if t.is_floating_point() else t for t in inputs)
        read = gather_read(*inputs, backend=backend, check_index_range=False)
        torch.testing.assert_close(read.to(expected.dtype), expected, atol=1e-5, rtol=1e-5)


def test_dispatch():
    query, memory_key, memory_value, index = make_inputs(grouped=False)
    with pytest.raises(ValueError, match="unknown similarity"):
        gather_read(query, memory_key, memory_value, index, similarity="cos")
    # float64 is the reference's: 'auto' falls back, 'triton' says why not
    auto = gather_read(query, memory_key, memory_value, index)
    torch.testing.assert_close(auto, gather_read(query, memory_key, memory_value, index,
                                                 backend="torch"))  # fmt: skip
    with pytest.raises(BackendError, match="float32/float16/bfloat16"):
        gather_read(query, memory_key, memory_value, index, backend="triton")


def test_autotune_pruning_keeps_register_sized_tiles():
    triton = pytest.importorskip("triton")
    from vos.kernels.gather_read import prune_configs

    configs = [
        triton.Config({"BLOCK_M": m, "BLOCK_K": k, "BLOCK_CV": cv}, num_warps=w)
        for m in (4, 16)
        for k in (16, 32)
        for cv in (32, 64)
        for w in (4, 8)
    ]
    kept = prune_configs(configs, {"value_channels": 32}, BLOCK_CK=64)
    assert kept and all(c.kwargs["BLOCK_CV"] == 32 for c in kept)  # no block wider than Cv
    assert all(
        c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_K"] * 64 <= 64 * 32 * c.num_warps for c in kept
    )
    # grouped: BLOCK_M is the group's; nothing fits a 64-pixel group, the smallest tile stays
    grouped = [triton.Config({"BLOCK_K": k, "BLOCK_CV": 64}, num_warps=4) for k in (16, 32)]
    forward = {"value_channels": 512, "memory_key_ptr": torch.empty(0, dtype=torch.float16)}
    kept = prune_configs(grouped, forward, BLOCK_CK=256, BLOCK_M=64, DOT_PRECISION="ieee")
    assert [c.kwargs["BLOCK_K"] for c in kept] == [16]


def test_grouped_configs_that_spilled_are_dropped_for_their_kind_of_product():
    triton = pytest.importorskip("triton")
    from vos.kernels.gather_read import _SPILLED, product_kind, prune_configs

    configs = [
        triton.Config({"BLOCK_K": k, "BLOCK_CV": cv}, num_warps=w)
        for k in (16, 32, 64)
        for cv in (64, 128)
        for w in (4, 8)
    ]
    for dtype, precision, kind in [
        (torch.float32, "ieee", "ieee"),
        (torch.float32, "tf32", "tf32"),
        (torch.float16, "ieee", "half"),
        (torch.bfloat16, "tf32", "half"),
    ]:
        assert product_kind(dtype, {"DOT_PRECISION": precision}) == kind
        backward = {"value_channels": 128, "memory_key_ptr": torch.empty(0, dtype=dtype),
                    "delta_ptr": None}  # fmt: skip
        kept = prune_configs(configs, backward, BLOCK_CK=64, BLOCK_M=16, DOT_PRECISION=precision)
        shapes = {(c.kwargs["BLOCK_K"], c.kwargs["BLOCK_CV"], c.num_warps) for c in kept}
        assert shapes and not shapes & _SPILLED[("bwd", kind)], kind
    # bf16 under the interpreter computes in fp32 (DOT_FP32): its products are fp32 ones
    assert product_kind(torch.bfloat16, {"DOT_PRECISION": "ieee", "DOT_FP32": True}) == "ieee"
    # (64, 64, 8) spilled in the fp16 backward, not in the TF32 one
    assert (64, 64, 8) in _SPILLED[("bwd", "half")] - _SPILLED[("bwd", "tf32")]


def test_cost_counts_candidates_once_per_group():
    plain = gather_read_cost(1, 64, 256, 25920, 128, group=1, dtype_bytes=2)
    grouped = gather_read_cost(1, 64, 256, 25920, 128, group=16, dtype_bytes=2)
    assert plain["flops"] == grouped["flops"] == 2 * 25920 * 128 * (64 + 256)
    query_and_readout = 25920 * (64 + 256) * 2
    plain_candidates = plain["bytes"] - query_and_readout - 25920 * 128 * 8
    grouped_candidates = grouped["bytes"] - query_and_readout - 25920 // 16 * 128 * 8
    assert plain_candidates == 16 * grouped_candidates == 25920 * 128 * (64 + 256) * 2
    with pytest.raises(ValueError, match="multiple of the group size"):
        gather_read_cost(1, 64, 256, 25921, 128, group=16)
