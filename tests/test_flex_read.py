"""`memory_read(backend="flex")` (flex_attention, `vos.ops.flex_read`) against the reference.

On the CPU (the default) the tests run flex_attention's eager path (compiling its fused CPU
kernel takes ~20 s per shape; one slow test does). flex refuses gradients on CPU tensors, so
the tests lift that refusal (`torch.nn.attention.flex_attention`'s device check) and compare
flex's own eager backward with the reference's: this checks the mapping (scale, score_mods,
masks), not a fused kernel. The sparse block is shrunk to 16 on the CPU so that tiny shapes
span several blocks. With VOS_TEST_DEVICE=cuda (`make gpu-check`) the same tests run the
compiled kernel on the GPU, gradients included, with flex's default 128-pixel blocks.

Tolerance: fp32 flex vs fp32 reference, forward and gradients, atol = rtol = 1e-4.
"""

from __future__ import annotations

import pytest
import torch
from helpers import TEST_DEVICE_NAME, kernel_test_device

import vos.ops.flex_read as flex_read
from vos.ops import gather_read, memory_read, window_read
from vos.ops.dispatch import BackendError, resolve_backend

# the eager path is chosen on purpose on the CPU (see the module docstring)
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

FP32_TOLERANCE = dict(atol=1e-4, rtol=1e-4)
QUERY_HW = (3, 7)
# B=2, Ck=8, Cv=12 (both under flex's 16-channel minimum: padded), N=37, M=21 = 3×7
SHAPE = dict(batch=2, key_channels=8, value_channels=12, memories=37, queries=21)


@pytest.fixture
def device(monkeypatch):
    device = kernel_test_device()
    if device.type == "cpu":
        # flex_attention refuses backward on CPU tensors; its eager backward is complete, so
        # the device check is lifted to compare gradients (see the module docstring)
        from torch.nn.attention import flex_attention as flex_module

        monkeypatch.setattr(flex_module, "_validate_device", lambda *args: None)
        # compiling the CPU's fused kernel takes ~20 s per shape: one slow test covers it
        monkeypatch.setattr(
            flex_read, "_compiled_flex_attention", lambda: flex_module.flex_attention
        )
        monkeypatch.setattr(flex_read, "SPARSE_BLOCK_SIZE", 16)
    else:
        import torch._dynamo.config as dynamo_config

        # every test compiles its own variant: past dynamo's default 8 it would run eagerly
        monkeypatch.setattr(dynamo_config, "recompile_limit", 256)
    return device


def make_inputs(batch, key_channels, value_channels, memories, queries, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    tensors = (
        torch.randn(batch, key_channels, queries, generator=g),
        torch.randn(batch, key_channels, memories, generator=g),
        torch.randn(batch, value_channels, memories, generator=g),
    )
    return tuple(t.to(device) for t in tensors)


def case_options(case: str, device, seed: int = 0, shape=SHAPE, query_hw=QUERY_HW) -> dict:
    g = torch.Generator().manual_seed(seed + 7)
    batch, memories, queries = shape["batch"], shape["memories"], shape["queries"]
    options: dict = {}
    if "memory_mask" in case:
        options["memory_mask"] = torch.rand(batch, memories, generator=g) > 0.4
    if "query_mask" in case:
        options["query_mask"] = torch.rand(batch, queries, generator=g) > 0.4
    if "gaussian" in case:
        height, width = query_hw
        centers = torch.rand(batch, memories, 2, generator=g) * torch.tensor([height, width])
        sigma = 0.5 + 2 * torch.rand(batch, memories, generator=g)
        options.update(gaussian_centers=centers, gaussian_sigma=sigma, query_hw=query_hw)
    if "bias" in case:
        options["bias"] = torch.randn(batch, memories, queries, generator=g)
    if "scale" in case:
        options["scale"] = 0.3
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in options.items()}


def read_with_grads(inputs, grad_readout, backend, **options):
    """Readout and the gradients of <readout, grad_readout> w.r.t. the keys and values."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    readout = memory_read(*leaves, backend=backend, **options)
    return (readout, *torch.autograd.grad(readout, leaves, grad_readout))


def assert_flex_matches_reference(inputs, options, seed=0):
    batch, value_channels = inputs[2].shape[:2]
    queries = inputs[0].shape[2]
    g = torch.Generator().manual_seed(seed + 1)
    grad_readout = torch.randn(batch, value_channels, queries, generator=g).to(inputs[0].device)
    flex = read_with_grads(inputs, grad_readout, "flex", **options)
    reference = read_with_grads(inputs, grad_readout, "torch", **options)
    for name, a, e in zip(
        ("readout", "d query_key", "d memory_key", "d memory_value"), flex, reference
    ):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, e, msg=lambda m, name=name: f"{name}: {m}", **FP32_TOLERANCE)
    return flex


CASES = [
    "plain",
    "scale",
    "gaussian",
    "memory_mask",
    "query_mask",
    "memory_mask+query_mask",
    "gaussian+memory_mask+query_mask+scale",
    "bias",
]


# every case with dot; with l2 (which only adds the key norm) two cases in the default run
FLEX_CASES = [
    pytest.param(
        case,
        similarity,
        marks=()
        if similarity == "dot" or case in ("plain", "gaussian+memory_mask+query_mask+scale")
        else pytest.mark.slow,
        id=f"{case}-{similarity}",
    )
    for similarity in ("dot", "l2")
    for case in CASES
]


@pytest.mark.parametrize("case, similarity", FLEX_CASES)
def test_flex_matches_reference(device, case, similarity):
    inputs = make_inputs(**SHAPE, device=device)
    options = dict(similarity=similarity, **case_options(case, device))
    assert_flex_matches_reference(inputs, options)


def test_gaussian_gradients_reach_centres_and_sigmas(device):
    """Unlike the Triton kernel, flex differentiates its captured tensors."""
    inputs = make_inputs(**SHAPE, device=device, seed=1)
    options = case_options("gaussian+memory_mask", device, seed=1)
    grads = {}
    for backend in ("flex", "torch"):
        centers = options["gaussian_centers"].clone().requires_grad_()
        sigma = options["gaussian_sigma"].clone().requires_grad_()
        readout = memory_read(
            *inputs,
            similarity="l2",
            memory_mask=options["memory_mask"],
            gaussian_centers=centers,
            gaussian_sigma=sigma,
            query_hw=QUERY_HW,
            backend=backend,
        )
        grads[backend] = torch.autograd.grad(readout.square().sum(), (centers, sigma))
    for flex, reference in zip(grads["flex"], grads["torch"]):
        torch.testing.assert_close(flex, reference, **FP32_TOLERANCE)


def test_rows_with_nothing_to_read_are_zero_with_zero_gradients(device):
    """Element 1's memory is all masked out (an object that disappeared) and some of element
    0's query pixels are masked: those rows read 0, never NaN, and pass no gradient back."""
    inputs = make_inputs(**SHAPE, device=device, seed=2)
    memory_mask = torch.ones(2, SHAPE["memories"], dtype=torch.bool, device=device)
    memory_mask[1] = False
    query_mask = torch.ones(2, SHAPE["queries"], dtype=torch.bool, device=device)
    query_mask[0, ::3] = False
    options = dict(similarity="l2", memory_mask=memory_mask, query_mask=query_mask)
    readout, d_query, d_key, d_value = assert_flex_matches_reference(inputs, options, seed=2)
    assert torch.all(readout[1] == 0) and torch.all(readout[0, :, ::3] == 0)
    assert torch.all(d_query[1] == 0) and torch.all(d_query[0, :, ::3] == 0)
    assert torch.all(d_key[1] == 0) and torch.all(d_value[1] == 0)
    assert readout[0, :, 1].abs().sum() > 0


def box_mask(frames, height, width, box, device):
    """[frames·H·W] bool, True inside box = (y0, y1, x0, x1) (exclusive ends) in every frame."""
    y0, y1, x0, x1 = box
    mask = torch.zeros(frames, height, width, dtype=torch.bool)
    mask[:, y0:y1, x0:x1] = True
    return mask.flatten().to(device)


def test_batch_elements_keep_their_own_masks(device):
    """B=2 with disjoint boxes: each element's read equals reading its own crops alone."""
    frames, height, width = 2, 5, 7
    shape = dict(batch=2, key_channels=6, value_channels=5, memories=70, queries=35)
    inputs = make_inputs(**shape, device=device, seed=3)
    memory_mask = torch.stack(
        [box_mask(frames, height, width, box, device) for box in [(0, 3, 4, 7), (2, 5, 0, 4)]]
    )
    query_mask = torch.stack(
        [box_mask(1, height, width, box, device) for box in [(2, 5, 0, 3), (0, 2, 1, 7)]]
    )
    options = dict(similarity="l2", memory_mask=memory_mask, query_mask=query_mask)
    masked = memory_read(*inputs, backend="flex", **options)
    query_key, memory_key, memory_value = inputs
    for b in range(2):
        cropped = memory_read(
            query_key[b : b + 1, :, query_mask[b]],
            memory_key[b : b + 1, :, memory_mask[b]],
            memory_value[b : b + 1, :, memory_mask[b]],
            similarity="l2",
        )
        expected = torch.zeros(1, 5, height * width, device=device)
        expected[:, :, query_mask[b]] = cropped
        torch.testing.assert_close(masked[b : b + 1], expected, **FP32_TOLERANCE)


def test_sizes_that_are_no_multiple_of_the_block(device):
    """N and M spanning several sparse blocks with a partial last one (16 on the CPU, 128 on
    the GPU), masks and the Gaussian on."""
    block = flex_read.SPARSE_BLOCK_SIZE
    query_hw = (3, (block + 7 + 2) // 3)
    shape = dict(
        batch=1, key_channels=16, value_channels=20, memories=2 * block + 5, queries=3 * query_hw[1]
    )
    inputs = make_inputs(**shape, device=device, seed=4)
    options = dict(
        similarity="dot",
        **case_options("gaussian+memory_mask+query_mask", device, 4, shape, query_hw),
    )
    assert_flex_matches_reference(inputs, options, seed=4)


@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_nan_outside_the_masks_never_reaches_the_output(device, similarity):
    inputs = make_inputs(**SHAPE, device=device, seed=5)
    options = case_options("memory_mask+query_mask", device, seed=5)
    memory_mask, query_mask = options["memory_mask"], options["query_mask"]
    query_key, memory_key, memory_value = inputs
    poisoned = (
        query_key.masked_fill(~query_mask.unsqueeze(1), float("nan")),
        memory_key.masked_fill(~memory_mask.unsqueeze(1), float("nan")),
        memory_value.masked_fill(~memory_mask.unsqueeze(1), float("nan")),
    )
    readout = memory_read(*poisoned, similarity=similarity, backend="flex", **options)
    clean = memory_read(*inputs, similarity=similarity, backend="torch", **options)
    assert torch.isfinite(readout).all()
    torch.testing.assert_close(readout, clean, **FP32_TOLERANCE)


def test_calls_flex_cannot_do_raise_backend_error_with_the_reason(device):
    inputs = make_inputs(**SHAPE, device=device, seed=6)
    with pytest.raises(BackendError, match="backend='flex'.*top_k < N"):
        memory_read(*inputs, top_k=3, backend="flex")
    with pytest.raises(BackendError, match="backend='flex'.*return_top"):
        memory_read(*inputs, return_top=2, backend="flex")
    query_key, memory_key, memory_value = inputs
    with pytest.raises(BackendError, match="one dtype"):
        memory_read(query_key, memory_key, memory_value.double(), backend="flex")
    # top_k >= N is the full softmax, which flex runs
    full = memory_read(*inputs, top_k=SHAPE["memories"], backend="flex")
    torch.testing.assert_close(full, memory_read(*inputs, backend="torch"), **FP32_TOLERANCE)
    # the other ops have no flex path
    grid = torch.randn(1, 4, 3, 5, device=device)
    with pytest.raises(BackendError, match="window_read: backend='flex'.*no flex_attention path"):
        window_read(grid, grid, grid, radius=1, backend="flex")
    index = torch.zeros(1, 15, 2, dtype=torch.long, device=device)
    with pytest.raises(BackendError, match="gather_read: backend='flex'"):
        gather_read(grid.flatten(2), grid.flatten(2), grid.flatten(2), index, backend="flex")


def test_auto_never_picks_flex():
    tensors = [torch.zeros(1)]
    for supported in (None, "a reason"):
        chosen = resolve_backend("memory_read", "auto", tensors, supported, flex_supported=None)
        assert chosen in ("torch", "triton")
    assert resolve_backend("memory_read", "flex", tensors, "a reason", flex_supported=None) == (
        "flex"
    )


@pytest.mark.skipif(TEST_DEVICE_NAME != "cpu", reason="a CPU-only refusal")
def test_gradients_on_the_cpu_are_refused_with_torchs_reason():
    inputs = make_inputs(**SHAPE, device="cpu")
    leaves = [x.clone().requires_grad_() for x in inputs]
    with pytest.raises(BackendError, match="backend='flex'.*backward on CPU"):
        memory_read(*leaves, backend="flex")


@pytest.mark.slow
@pytest.mark.skipif(TEST_DEVICE_NAME != "cpu", reason="the CPU's fused kernel")
def test_cpu_inference_compiles_the_fused_kernel():
    """Without gradients the CPU runs flex's compiled C++ kernel (~20 s to compile)."""
    inputs = make_inputs(**SHAPE, device="cpu", seed=7)
    options = dict(similarity="l2", **case_options("gaussian+memory_mask+query_mask", "cpu", 7))
    with torch.no_grad():
        flex = memory_read(*inputs, backend="flex", **options)
    torch.testing.assert_close(flex, memory_read(*inputs, **options), **FP32_TOLERANCE)
