"""`vos.ops.window_read`: the reference against a dense read restricted to the window, its
identities, and the Triton kernel (run by the interpreter on the CPU) against the reference,
with and without the window's top-k (values, argmax offsets and their gradients).

Tolerances: float64 reference vs dense float64 read 1e-10; kernel vs reference in fp32
atol = rtol = 1e-4 (forward and gradients); in fp16 the kernel's max error against float64
is at most 2× the fp16 reference's error (+1e-5); bf16 outputs and gradients are within bf16
rounding (one ulp, rtol 2⁻⁷) of an fp32 computation on the same bf16-rounded inputs.
"""

from __future__ import annotations

import math

import pytest
import torch

from vos.ops.dispatch import BackendError
from vos.ops.memory_read import affinity_logits, memory_read
from vos.ops.window_read import WindowTop, window_read, window_read_cost, window_read_reference

# VOS_TEST_DEVICE=cuda (`make gpu-check`) runs these tests on the GPU (conftest)
pytestmark = pytest.mark.usefixtures("tensors_on_test_device")


def random_inputs(
    batch, key_channels, value_channels, height, width, *, seed=0, dtype=torch.float64
):
    g = torch.Generator().manual_seed(seed)
    query_key = torch.randn(batch, key_channels, height, width, generator=g, dtype=dtype)
    memory_key = torch.randn(batch, key_channels, height, width, generator=g, dtype=dtype)
    memory_value = torch.randn(batch, value_channels, height, width, generator=g, dtype=dtype)
    return query_key, memory_key, memory_value


def window_mask(height, width, radius):
    """``[N, M]`` True where memory pixel n lies in the window of query pixel m."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    y, x = y.flatten(), x.flatten()
    return ((y[:, None] - y[None, :]).abs() <= radius) & ((x[:, None] - x[None, :]).abs() <= radius)


def dense_window_logits(query_key, memory_key, radius, similarity, scale=None):
    """The full ``[B, N, M]`` logits of the global read with out-of-window entries at -inf."""
    _, _, height, width = query_key.shape
    logits = affinity_logits(
        query_key.flatten(2), memory_key.flatten(2), similarity=similarity, scale=scale
    )
    return logits.masked_fill(~window_mask(height, width, radius), -math.inf)


def dense_window_read(query_key, memory_key, memory_value, radius, similarity, scale=None):
    """Window read = dense read restricted to the window (the issue's definition)."""
    batch, value_channels, height, width = memory_value.shape
    logits = dense_window_logits(query_key, memory_key, radius, similarity, scale)
    readout = torch.bmm(memory_value.flatten(2), torch.softmax(logits, dim=1))
    return readout.view(batch, value_channels, height, width)


# ---------------------------------------------------------------------------------------------
# the reference


@pytest.mark.parametrize("similarity", ["dot", "l2"])
@pytest.mark.parametrize("radius", [0, 1, 2])
def test_reference_is_the_dense_read_restricted_to_the_window(similarity, radius):
    query_key, memory_key, memory_value = random_inputs(2, 4, 3, 5, 7)
    expected = dense_window_read(query_key, memory_key, memory_value, radius, similarity)
    readout = window_read(query_key, memory_key, memory_value, radius=radius, similarity=similarity)
    torch.testing.assert_close(readout, expected, atol=1e-10, rtol=1e-10)


def test_custom_scale_is_applied():
    query_key, memory_key, memory_value = random_inputs(1, 4, 3, 4, 5)
    expected = dense_window_read(query_key, memory_key, memory_value, 1, "dot", scale=0.3)
    readout = window_read(query_key, memory_key, memory_value, radius=1, scale=0.3)
    torch.testing.assert_close(readout, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("similarity", ["dot", "l2"])
@pytest.mark.parametrize("radius", [4, 50])  # 4 = max(H, W) − 1 reaches every pixel
def test_radius_covering_the_frame_equals_the_global_read(similarity, radius):
    # inside the frame nothing is padded, so the border handling cannot differ from memory_read
    query_key, memory_key, memory_value = random_inputs(2, 4, 3, 4, 5)
    readout = window_read(query_key, memory_key, memory_value, radius=radius, similarity=similarity)
    global_read = memory_read(
        query_key.flatten(2), memory_key.flatten(2), memory_value.flatten(2), similarity=similarity
    )
    torch.testing.assert_close(readout.flatten(2), global_read, atol=1e-10, rtol=1e-10)


def test_padding_is_excluded_not_read_as_zero_keys():
    # with a zero key at every padded position a corner pixel would share its softmax with
    # five zero-logit pixels; excluded, the corner's window is its 2×2 in-frame neighbourhood
    query_key, memory_key, memory_value = random_inputs(1, 3, 2, 4, 4, seed=1)
    readout = window_read(query_key, memory_key, memory_value, radius=1)
    scale = 1 / math.sqrt(3)
    logits = torch.einsum("c,chw->hw", query_key[0, :, 0, 0], memory_key[0, :, :2, :2]) * scale
    weights = torch.softmax(logits.flatten(), dim=0)
    corner = memory_value[0, :, :2, :2].flatten(1) @ weights
    torch.testing.assert_close(readout[0, :, 0, 0], corner, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_radius_zero_returns_the_memory_value_at_the_same_position(similarity):
    query_key, memory_key, memory_value = random_inputs(2, 4, 3, 5, 6, dtype=torch.float32)
    readout = window_read(query_key, memory_key, memory_value, radius=0, similarity=similarity)
    torch.testing.assert_close(readout, memory_value, atol=0, rtol=0)


def test_one_by_one_grid_reads_its_only_pixel():
    query_key, memory_key, memory_value = random_inputs(3, 4, 5, 1, 1)
    readout = window_read(query_key, memory_key, memory_value, radius=3, similarity="l2")
    torch.testing.assert_close(readout, memory_value, atol=0, rtol=0)


def test_half_inputs_give_half_outputs_with_fp32_logits():
    query_key, memory_key, memory_value = random_inputs(1, 4, 3, 4, 5)
    readout = window_read(
        query_key.half(), memory_key.half(), memory_value.half(), radius=1, backend="torch"
    )
    assert readout.dtype == torch.float16
    expected = window_read(
        query_key.half().double(),
        memory_key.half().double(),
        memory_value.half().double(),
        radius=1,
    )
    torch.testing.assert_close(readout.double(), expected, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_reference_gradcheck(similarity):
    """The reference's hand-written backward (`_ShiftedWindowRead`) against finite differences:
    the readout, and the window's top logits (LMRC's comparator) with it, at a radius that puts
    the padding inside every window and a window of fewer positions than k at the corners."""
    inputs = tuple(t.requires_grad_() for t in random_inputs(2, 3, 2, 3, 4, seed=2))

    def read(query_key, memory_key, memory_value):
        return window_read_reference(
            query_key,
            memory_key,
            memory_value,
            radius=1,
            similarity=similarity,
        )

    def read_with_top(query_key, memory_key, memory_value):
        readout, top = window_read_reference(
            query_key,
            memory_key,
            memory_value,
            radius=2,
            similarity=similarity,
            scale=0.7,
            return_top=12,  # a corner's window holds 9 in-frame positions
        )
        finite = torch.isfinite(top.values)  # −inf past a window's in-frame positions
        return readout, torch.where(finite, top.values, 0.0)

    assert torch.autograd.gradcheck(read, inputs)
    assert torch.autograd.gradcheck(read_with_top, inputs)


# ---------------------------------------------------------------------------------------------
# return_top: LMRC's comparator values and HMMN's tracking offsets


def shifted_key_case(shift=(1, -2), height=6, width=7, key_channels=8):
    """Memory keys equal to the query keys moved by ``shift``: mk[y + dy, x + dx] = qk[y, x]."""
    g = torch.Generator().manual_seed(3)
    query_key = torch.nn.functional.normalize(
        torch.randn(1, key_channels, height, width, generator=g, dtype=torch.float64), dim=1
    )
    memory_key = torch.nn.functional.normalize(torch.randn_like(query_key), dim=1)
    dy, dx = shift
    ys, xs = slice(max(0, -dy), height - max(0, dy)), slice(max(0, -dx), width - max(0, dx))
    ys_shifted = slice(ys.start + dy, ys.stop + dy)
    xs_shifted = slice(xs.start + dx, xs.stop + dx)
    memory_key[:, :, ys_shifted, xs_shifted] = query_key[:, :, ys, xs]
    tracked = torch.zeros(height, width, dtype=torch.bool)
    tracked[ys, xs] = True  # query pixels whose shifted position is inside the frame
    return query_key, memory_key, tracked


@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_return_top_tracks_a_shifted_key(similarity):
    # unit-norm keys: q·k and 2 q·k − ‖k‖² are both largest where k = q
    query_key, memory_key, tracked = shifted_key_case(shift=(1, -2))
    memory_value = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    readout, top = window_read(
        query_key, memory_key, memory_value, radius=2, similarity=similarity, return_top=3
    )
    assert isinstance(top, WindowTop)
    assert top.argmax_offset.shape == (1, 6, 7, 2) and top.argmax_offset.dtype == torch.int64
    assert top.values.shape == (1, 6, 7, 3)
    offsets = top.argmax_offset[0][tracked]
    assert (offsets == torch.tensor([1, -2])).all()
    # the best logit is the key matched with itself
    scale = 1 / math.sqrt(8)
    best = scale if similarity == "dot" else scale * (2 - 1)  # ‖q‖ = 1
    torch.testing.assert_close(
        top.values[0, ..., 0][tracked], torch.full((int(tracked.sum()),), best, dtype=torch.float64)
    )
    # readout is unchanged by asking for the top
    plain = window_read(query_key, memory_key, memory_value, radius=2, similarity=similarity)
    torch.testing.assert_close(readout, plain, atol=0, rtol=0)


def test_return_top_values_are_the_sorted_window_logits_padded_with_minus_inf():
    query_key, memory_key, memory_value = random_inputs(2, 4, 3, 4, 5, seed=4)
    radius, k = 1, 12  # k > (2r+1)² = 9: every window has fewer than k valid positions
    _, top = window_read(query_key, memory_key, memory_value, radius=radius, return_top=k)
    dense = dense_window_logits(query_key, memory_key, radius, "dot")  # [B, N, M]
    expected = dense.sort(dim=1, descending=True).values  # -inf (outside the window) last
    expected = torch.cat((expected[:, :9], expected.new_full((2, 3, 20), -math.inf)), dim=1)
    torch.testing.assert_close(top.values, expected.permute(0, 2, 1).reshape(2, 4, 5, k))
    # a corner window holds 4 pixels, an edge window 6, an interior one 9
    valid = torch.isfinite(top.values[0]).sum(-1)
    assert valid[0, 0] == 4 and valid[0, 2] == 6 and valid[1, 2] == 9
    # argmax offsets point at the best in-frame position
    best_memory = dense.argmax(dim=1)[0].view(4, 5)
    y, x = torch.meshgrid(torch.arange(4), torch.arange(5), indexing="ij")
    expected_offset = torch.stack((best_memory // 5 - y, best_memory % 5 - x), dim=-1)
    assert torch.equal(top.argmax_offset[0], expected_offset)


def test_return_top_beyond_the_kernel_falls_back_and_triton_refuses_it():
    from vos.ops.window_read import MAX_KERNEL_TOP_K

    query_key, memory_key, memory_value = random_inputs(1, 4, 3, 3, 3, dtype=torch.float32)
    k = MAX_KERNEL_TOP_K + 1
    readout, top = window_read(query_key, memory_key, memory_value, radius=1, return_top=k)
    assert readout.shape == (1, 3, 3, 3) and top.values.shape == (1, 3, 3, k)
    with pytest.raises(BackendError, match="return_top"):
        window_read(query_key, memory_key, memory_value, radius=1, return_top=k, backend="triton")


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("shapes", "kwargs", "message"),
    [
        (((1, 4, 5, 6), (1, 4, 5, 7), (1, 3, 5, 6)), {}, "same shape"),
        (((1, 4, 5, 6), (1, 3, 5, 6), (1, 3, 5, 6)), {}, "same shape"),
        (((1, 4, 5, 6), (1, 4, 5, 6), (2, 3, 5, 6)), {}, "memory_value"),
        (((1, 4, 5, 6), (1, 4, 5, 6), (1, 3, 6, 5)), {}, "memory_value"),
        (((1, 4, 30), (1, 4, 30), (1, 3, 30)), {}, r"\[B, C, H, W\]"),
        (((1, 4, 5, 6), (1, 4, 5, 6), (1, 3, 5, 6)), {"radius": -1}, "radius"),
        (((1, 4, 5, 6), (1, 4, 5, 6), (1, 3, 5, 6)), {"radius": 1.5}, "radius"),
        (((1, 4, 5, 6), (1, 4, 5, 6), (1, 3, 5, 6)), {"similarity": "cosine"}, "similarity"),
        (((1, 4, 5, 6), (1, 4, 5, 6), (1, 3, 5, 6)), {"return_top": 0}, "return_top"),
    ],
)
def test_bad_input_raises_a_clear_value_error(shapes, kwargs, message):
    tensors = [torch.zeros(shape) for shape in shapes]
    kwargs = {"radius": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        window_read(*tensors, **kwargs)


def test_unknown_backend_raises():
    tensors = random_inputs(1, 2, 2, 3, 3)
    with pytest.raises(ValueError, match="backend"):
        window_read(*tensors, radius=1, backend="cuda")


def test_triton_backend_refuses_float64():
    with pytest.raises(BackendError, match="float64"):
        window_read(*random_inputs(1, 2, 2, 3, 3), radius=1, backend="triton")


# ---------------------------------------------------------------------------------------------
# the Triton kernel (interpreted on the CPU)

KERNEL_CASES = [
    # B, Ck, Cv, H, W, radius, similarity: grids that are not multiples of the 32-pixel block,
    # Cv = 20 spanning two 16-channel value blocks, radius 0, a 1×1 grid, a radius > frame
    pytest.param(2, 5, 20, 7, 9, 1, "dot", id="63px-2valueblocks-dot"),
    pytest.param(1, 3, 4, 5, 6, 2, "l2", id="30px-r2-l2"),
    pytest.param(1, 6, 5, 11, 5, 3, "dot", id="55px-r3-dot"),
    pytest.param(1, 4, 3, 4, 5, 0, "l2", id="radius0-l2"),
    pytest.param(2, 4, 3, 1, 1, 1, "dot", id="1x1"),
    pytest.param(1, 3, 2, 3, 4, 6, "l2", id="radius-beyond-frame-l2"),
]


def kernel_and_reference(inputs, grad_readout, radius, similarity):
    """Outputs and input gradients of both backends for the same inputs and upstream grad."""
    results = {}
    for backend in ("triton", "torch"):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        readout = window_read(*leaves, radius=radius, similarity=similarity, backend=backend)
        grads = torch.autograd.grad(readout, leaves, grad_readout)
        results[backend] = (readout, *grads)
    return results["triton"], results["torch"]


@pytest.mark.parametrize(
    ("batch", "ck", "cv", "height", "width", "radius", "similarity"), KERNEL_CASES
)
def test_kernel_matches_reference_fp32(batch, ck, cv, height, width, radius, similarity):
    inputs = random_inputs(batch, ck, cv, height, width, seed=5, dtype=torch.float32)
    grad_readout = torch.randn(batch, cv, height, width, generator=torch.Generator().manual_seed(6))
    kernel, reference = kernel_and_reference(inputs, grad_readout, radius, similarity)
    for name, got, expected in zip(("readout", "dQ", "dK", "dV"), kernel, reference):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_kernel_fp16_error_is_at_most_twice_the_fp16_reference_error(similarity):
    inputs64 = random_inputs(2, 8, 12, 7, 9, seed=7)
    grad64 = torch.randn(
        2, 12, 7, 9, generator=torch.Generator().manual_seed(8), dtype=torch.float64
    )
    # truth: float64 on the fp16-rounded inputs, so only the computation's precision differs
    inputs64 = [t.half().double() for t in inputs64]
    grad64 = grad64.half().double()
    leaves = [t.clone().requires_grad_() for t in inputs64]
    truth_readout = window_read_reference(*leaves, radius=2, similarity=similarity)
    truth = (truth_readout, *torch.autograd.grad(truth_readout, leaves, grad64))
    kernel, reference = kernel_and_reference(
        [t.half() for t in inputs64], grad64.half(), 2, similarity
    )
    for name, got, ref, exact in zip(("readout", "dQ", "dK", "dV"), kernel, reference, truth):
        assert got.dtype == torch.float16
        kernel_error = (got.double() - exact).abs().max().item()
        reference_error = (ref.double() - exact).abs().max().item()
        assert kernel_error <= 2 * reference_error + 1e-5, (name, kernel_error, reference_error)


def test_kernel_bf16_is_the_fp32_result_within_bf16_rounding():
    # the kernel casts bf16 loads to fp32 and rounds only when storing: compare with fp32 math
    # on the same bf16-rounded inputs, within one bf16 ulp (relative 2⁻⁷): a GPU rounds the
    # store to nearest (half an ulp), Triton's interpreter truncates (less than one ulp)
    inputs = [t.bfloat16() for t in random_inputs(1, 8, 6, 6, 7, seed=9, dtype=torch.float32)]
    grad_readout = torch.randn(1, 6, 6, 7, generator=torch.Generator().manual_seed(10)).bfloat16()
    leaves = [t.float().requires_grad_() for t in inputs]
    fp32_readout = window_read_reference(*leaves, radius=1, similarity="l2")
    fp32 = (fp32_readout, *torch.autograd.grad(fp32_readout, leaves, grad_readout.float()))
    leaves = [t.clone().requires_grad_() for t in inputs]
    readout = window_read(*leaves, radius=1, similarity="l2", backend="triton")
    kernel = (readout, *torch.autograd.grad(readout, leaves, grad_readout))
    for name, got, expected in zip(("readout", "dQ", "dK", "dV"), kernel, fp32):
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), expected, atol=1e-4, rtol=2**-7, msg=name)


def test_kernel_promotes_mixed_dtypes_and_keeps_the_value_dtype():
    query_key, memory_key, memory_value = random_inputs(1, 4, 3, 4, 5, dtype=torch.float32)
    readout = window_read(
        query_key.half(), memory_key.half(), memory_value, radius=1, backend="triton"
    )
    assert readout.dtype == torch.float32
    expected = window_read(
        query_key.half(), memory_key.half(), memory_value, radius=1, backend="torch"
    )
    torch.testing.assert_close(readout, expected, atol=1e-5, rtol=1e-5)


TOP_CASES = [
    # B, Ck, Cv, H, W, radius, similarity, k: LMRC's k = 5 in a 5×5 window, k = 1, a k beyond
    # the window (empty slots), a window clipped by a small frame, 63 pixels over 2 blocks
    pytest.param(1, 3, 4, 5, 6, 2, "l2", 5, id="r2-k5-l2"),
    pytest.param(2, 5, 20, 7, 9, 1, "dot", 1, id="63px-k1-dot"),
    pytest.param(1, 4, 3, 4, 5, 1, "dot", 12, id="k-beyond-window-dot"),
    pytest.param(1, 6, 5, 3, 11, 3, "l2", 7, id="clipped-window-l2"),
]


def top_outputs(inputs, grad_readout, radius, similarity, k, backend):
    """Readout, WindowTop and the input gradients of ⟨readout, g⟩ + ⟨finite top values, h⟩."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    readout, top = window_read(
        *leaves, radius=radius, similarity=similarity, return_top=k, backend=backend
    )
    weights = torch.randn(top.values.shape, generator=torch.Generator().manual_seed(11))
    finite = torch.isfinite(top.values)
    loss = (readout * grad_readout).sum() + (top.values.where(finite, 0.0) * weights).sum()
    return readout, top, torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize(
    ("batch", "ck", "cv", "height", "width", "radius", "similarity", "k"), TOP_CASES
)
def test_kernel_top_k_matches_reference_with_gradients(
    batch, ck, cv, height, width, radius, similarity, k
):
    inputs = random_inputs(batch, ck, cv, height, width, seed=12, dtype=torch.float32)
    grad_readout = torch.randn(
        batch, cv, height, width, generator=torch.Generator().manual_seed(13)
    )
    readout, top, grads = top_outputs(inputs, grad_readout, radius, similarity, k, "triton")
    ref_readout, ref_top, ref_grads = top_outputs(
        inputs, grad_readout, radius, similarity, k, "torch"
    )
    torch.testing.assert_close(readout, ref_readout, atol=1e-4, rtol=1e-4)
    # the same slots are empty (-inf) and the others hold the same values, best first
    assert torch.equal(torch.isfinite(top.values), torch.isfinite(ref_top.values))
    torch.testing.assert_close(top.values, ref_top.values, atol=1e-4, rtol=1e-4)
    assert torch.equal(top.argmax_offset, ref_top.argmax_offset)
    # the top values' gradients reach the keys through the slots' offsets (dQ and dK)
    for name, got, expected in zip(("dQ", "dK", "dV"), grads, ref_grads):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4, msg=name)


def test_kernel_top_k_gradient_reaches_the_keys_of_the_chosen_offsets_only():
    # only the top values carry a gradient: dQ_p = scale · Σ_j h_j k_{p + offset_j} (dot)
    inputs = random_inputs(1, 4, 3, 5, 6, seed=14, dtype=torch.float32)
    leaves = [t.clone().requires_grad_() for t in inputs]
    _, top = window_read(*leaves, radius=1, return_top=2, backend="triton")
    grad_query, grad_key, grad_value = torch.autograd.grad(top.values.sum(), leaves)
    assert grad_value.abs().max() == 0
    reference = [t.clone().requires_grad_() for t in inputs]
    _, ref_top = window_read(*reference, radius=1, return_top=2, backend="torch")
    ref_query, ref_key = torch.autograd.grad(ref_top.values.sum(), reference[:2])
    torch.testing.assert_close(grad_query, ref_query, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_key, ref_key, atol=1e-5, rtol=1e-5)


def test_kernel_argmax_takes_the_first_of_equal_logits_in_raster_order():
    # equal memory keys: every window position ties, the first one (top-left, clipped to the
    # frame) wins, as torch's argmax over the reference's raster-ordered window
    query_key, _, memory_value = random_inputs(1, 4, 3, 4, 5, seed=15, dtype=torch.float32)
    memory_key = torch.ones(1, 4, 4, 5)
    _, top = window_read(
        query_key, memory_key, memory_value, radius=1, return_top=3, backend="triton"
    )
    _, ref_top = window_read(
        query_key, memory_key, memory_value, radius=1, return_top=3, backend="torch"
    )
    assert torch.equal(top.argmax_offset, ref_top.argmax_offset)
    assert (top.argmax_offset[0, 1:, 1:] == -1).all()  # interior: offset (-1, -1)
    torch.testing.assert_close(top.values, ref_top.values)


def test_kernel_reads_channels_last_and_strided_inputs():
    # the kernels run pixel-major: a channels_last tensor is used as it is, any other layout
    # is copied to it; the results do not depend on the layout
    inputs = random_inputs(2, 6, 5, 5, 7, seed=16, dtype=torch.float32)
    plain = window_read(*inputs, radius=2, similarity="l2", return_top=4, backend="triton")
    channels_last = [t.contiguous(memory_format=torch.channels_last) for t in inputs]
    strided = [torch.cat((t, t), dim=3)[..., : t.shape[3]] for t in inputs]
    for variant in (channels_last, strided):
        readout, top = window_read(
            *variant, radius=2, similarity="l2", return_top=4, backend="triton"
        )
        torch.testing.assert_close(readout, plain[0], atol=0, rtol=0)
        torch.testing.assert_close(top.values, plain[1].values, atol=0, rtol=0)


def test_kernel_function_rejects_bad_inputs():
    from vos.kernels.window_read import window_read_triton

    query_key, memory_key, memory_value = random_inputs(1, 4, 3, 4, 5, dtype=torch.float32)
    with pytest.raises(ValueError, match="share a dtype"):
        window_read_triton(query_key, memory_key.half(), memory_value, radius=1)
    with pytest.raises(ValueError, match="float16, bfloat16 or float32"):
        window_read_triton(query_key.double(), memory_key.double(), memory_value.double(), radius=1)
    with pytest.raises(ValueError, match="same shape"):
        window_read_triton(query_key, memory_key[:, :3], memory_value, radius=1)
    with pytest.raises(ValueError, match="radius"):
        window_read_triton(query_key, memory_key, memory_value, radius=-2)
    with pytest.raises(ValueError, match="top_k"):
        window_read_triton(query_key, memory_key, memory_value, radius=1, top_k=33)


# ---------------------------------------------------------------------------------------------
# cost model


def test_cost_counts_the_in_frame_pairs():
    # radius 0: one pair per pixel; radius covering the frame: every pair, as the global read
    local = window_read_cost(B=2, Ck=8, Cv=4, H=5, W=6, radius=0, dtype_bytes=4)
    assert local["flops"] == 2 * 30 * (2 * 8 + 2 * 4)
    full = window_read_cost(B=2, Ck=8, Cv=4, H=5, W=6, radius=100, dtype_bytes=4)
    assert full["flops"] == 2 * 30 * 30 * (2 * 8 + 2 * 4)
    # radius 1 on 5×6: pairs = (5 + 2·4) · (6 + 2·5), matching the window mask
    ones = window_read_cost(B=1, Ck=1, Cv=1, H=5, W=6, radius=1, dtype_bytes=2)
    assert ones["flops"] == 4 * int(window_mask(5, 6, 1).sum())
    assert ones["bytes"] == 2 * 30 * 4
