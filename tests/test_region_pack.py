"""`vos.kernels.region_pack`: region reads packed before the Triton kernel (varlen), and the
reference's box crop by strided slices (`vos.ops.memory_read._box_runs`).

The kernel runs under Triton's interpreter (conftest), whose blocks are 16 pixels; box
corners are never block multiples. fp32 tolerances are the kernel tests' (atol = rtol = 1e-4).
"""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch

from vos.ops.memory_read import memory_read

# vos.kernels is installed from kernels/ (outside src/), hence imported by name here
region_pack = importlib.import_module("vos.kernels.region_pack")
kernels = importlib.import_module("vos.kernels.memory_read")
# the module, not the function `vos.ops` exports under the same name
memory_read_module = importlib.import_module("vos.ops.memory_read")
INTERPRETER_BLOCK_M = kernels.INTERPRETER_BLOCK_M
INTERPRETER_BLOCK_N = kernels.INTERPRETER_BLOCK_N

FP32_TOLERANCE = dict(atol=1e-4, rtol=1e-4)


def box_mask(height, width, boxes):
    """``[len(boxes)·H·W]`` bool, frame t True inside ``boxes[t] = (y0, y1, x0, x1)``
    (end-exclusive; None: an empty frame)."""
    mask = torch.zeros(len(boxes), height, width, dtype=torch.bool)
    for frame, box in enumerate(boxes):
        if box is not None:
            y0, y1, x0, x1 = box
            mask[frame, y0:y1, x0:x1] = True
    return mask.flatten()


def make_inputs(batch, key_channels, value_channels, memories, queries, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, key_channels, queries, generator=g),
        torch.randn(batch, key_channels, memories, generator=g),
        torch.randn(batch, value_channels, memories, generator=g),
    )


def read_with_grads(read, query_key, memory_key, memory_value, grad_readout, **options):
    """Readout and the gradients of <readout, grad_readout> w.r.t. the keys and values."""
    inputs = [x.detach().clone().requires_grad_() for x in (query_key, memory_key, memory_value)]
    readout = read(*inputs, **options)
    grads = torch.autograd.grad(readout, inputs, grad_readout)
    return (readout, *grads)


def packed(*inputs, **options):
    return region_pack.packed_memory_read_triton(*inputs, **options)


def reference(*inputs, **options):
    return memory_read(*inputs, backend="torch", **options)


def assert_all_close(actual, expected, **tolerance):
    names = ("readout", "d query_key", "d memory_key", "d memory_value")
    for name, a, e in zip(names, actual, expected):
        torch.testing.assert_close(a, e, msg=lambda m, name=name: f"{name}: {m}", **tolerance)


# a 5×7 query grid (35 pixels: 3 query blocks) and T = 3 memory frames (105: 7 blocks);
# the two batch elements have different boxes, and the memory boxes differ per frame
GRID = (5, 7)
FRAMES = 3
MEMORY_BOXES = [
    [(1, 4, 2, 7), (0, 5, 3, 4), (2, 5, 0, 6)],
    [(0, 2, 1, 5), (3, 5, 0, 7), (1, 4, 4, 6)],
]
QUERY_BOXES = [[(1, 5, 1, 4)], [(0, 3, 2, 7)]]


def box_masks(memory_boxes=MEMORY_BOXES, query_boxes=QUERY_BOXES):
    memory_mask = torch.stack([box_mask(*GRID, boxes) for boxes in memory_boxes])
    query_mask = torch.stack([box_mask(*GRID, boxes) for boxes in query_boxes])
    return memory_mask, query_mask


def small_inputs(seed=0, value_channels=6):
    queries = GRID[0] * GRID[1]
    inputs = make_inputs(2, 4, value_channels, FRAMES * queries, queries, seed=seed)
    grad_readout = torch.randn(
        2, value_channels, queries, generator=torch.Generator().manual_seed(seed)
    )
    return inputs, grad_readout


# -- packing ---------------------------------------------------------------------------------
def test_pack_index_puts_valid_pixels_first_in_raster_order():
    mask = torch.tensor([[0, 1, 0, 1, 1, 0], [1, 0, 0, 0, 0, 1]], dtype=torch.bool)
    index, packed_mask = region_pack.pack_index(mask)
    assert index[0].tolist() == [1, 3, 4]
    assert index[1, :2].tolist() == [0, 5]  # then a masked pixel to fill the slot
    assert not mask[1, index[1, 2]]
    assert packed_mask.tolist() == [[True, True, True], [True, True, False]]
    full = torch.tensor([[0, 1, 1], [1, 0, 1]], dtype=torch.bool)
    index, packed_mask = region_pack.pack_index(full)
    assert index.tolist() == [[1, 2], [0, 2]] and packed_mask is None  # no tail to mask
    index, packed_mask = region_pack.pack_index(torch.zeros(2, 4, dtype=torch.bool))
    assert index.shape == (2, 1) and packed_mask.tolist() == [[False], [False]]


@pytest.mark.parametrize(
    "similarity, masks",
    [
        ("dot", "memory+query"),
        ("l2", "memory"),
        pytest.param("dot", "query", marks=pytest.mark.slow),
        pytest.param("l2", "memory+query", marks=pytest.mark.slow),
        pytest.param("dot", "memory", marks=pytest.mark.slow),
        pytest.param("l2", "query", marks=pytest.mark.slow),
    ],
)
def test_packed_read_matches_reference_with_unaligned_boxes(similarity, masks):
    inputs, grad_readout = small_inputs(seed=1)
    memory_mask, query_mask = box_masks()
    options = dict(
        similarity=similarity,
        memory_mask=memory_mask if "memory" in masks else None,
        query_mask=query_mask if "query" in masks else None,
    )
    assert_all_close(
        read_with_grads(packed, *inputs, grad_readout, **options),
        read_with_grads(reference, *inputs, grad_readout, **options),
        **FP32_TOLERANCE,
    )


def test_packed_read_splits_wide_values_over_programs():
    """Cv wider than one value block (the kernel's dV per value block) through the packing."""
    inputs, grad_readout = small_inputs(seed=2, value_channels=2 * kernels.INTERPRETER_BLOCK_CV + 3)
    memory_mask, query_mask = box_masks()
    options = dict(similarity="l2", memory_mask=memory_mask, query_mask=query_mask)
    assert_all_close(
        read_with_grads(packed, *inputs, grad_readout, **options),
        read_with_grads(reference, *inputs, grad_readout, **options),
        **FP32_TOLERANCE,
    )


def test_packed_read_with_the_gaussian_packs_only_the_memory():
    """HMMN's Gaussian needs each query's grid position: the queries stay in place (their mask
    passed on), the memory is packed with its centres and sigmas."""
    inputs, grad_readout = small_inputs(seed=3)
    memory_mask, query_mask = box_masks()
    g = torch.Generator().manual_seed(3)
    memories = inputs[1].shape[2]
    centers = torch.rand(2, memories, 2, generator=g) * torch.tensor(GRID)
    sigma = 0.5 + 2 * torch.rand(2, memories, generator=g)
    options = dict(
        memory_mask=memory_mask,
        query_mask=query_mask,
        gaussian_centers=centers,
        gaussian_sigma=sigma,
        query_hw=GRID,
    )
    assert_all_close(
        read_with_grads(packed, *inputs, grad_readout, **options),
        read_with_grads(reference, *inputs, grad_readout, **options),
        **FP32_TOLERANCE,
    )


@pytest.mark.slow
def test_packed_read_with_top_k():
    """STCN's top-k picks among the valid memory pixels, which packing keeps (the tail is
    masked, so it is never picked)."""
    if "top_k" not in inspect.signature(kernels.memory_read_triton).parameters:
        pytest.skip("this memory_read_triton has no top_k")
    inputs, grad_readout = small_inputs(seed=11)
    memory_mask, query_mask = box_masks()
    options = dict(similarity="l2", memory_mask=memory_mask, query_mask=query_mask, top_k=5)
    assert_all_close(
        read_with_grads(packed, *inputs, grad_readout, **options),
        read_with_grads(reference, *inputs, grad_readout, **options),
        **FP32_TOLERANCE,
    )


def test_empty_regions_read_zero_with_zero_gradients():
    """An element with no memory pixel, one with no query pixel, and a batch with neither:
    zeros, finite zero gradients where nothing is read, no NaN."""
    inputs, grad_readout = small_inputs(seed=4)
    memory_mask, query_mask = box_masks()
    memory_mask[1] = False
    query_mask[0] = False
    options = dict(memory_mask=memory_mask, query_mask=query_mask)
    readout, *grads = read_with_grads(packed, *inputs, grad_readout, **options)
    assert torch.all(readout == 0)  # element 0 reads nothing, element 1 has no memory
    for grad in grads:
        assert torch.isfinite(grad).all() and torch.all(grad == 0)
    assert_all_close(
        (readout, *grads),
        read_with_grads(reference, *inputs, grad_readout, **options),
        **FP32_TOLERANCE,
    )
    nothing = torch.zeros_like(memory_mask), torch.zeros_like(query_mask)
    readout, *grads = read_with_grads(
        packed, *inputs, grad_readout, memory_mask=nothing[0], query_mask=nothing[1]
    )
    assert torch.all(readout == 0)
    assert all(torch.isfinite(g).all() and torch.all(g == 0) for g in grads)
    # only element 1 empty: element 0 unchanged by its neighbour's empty region
    memory_mask, query_mask = box_masks()
    memory_mask[1] = False
    options = dict(memory_mask=memory_mask, query_mask=query_mask)
    assert_all_close(
        read_with_grads(packed, *inputs, grad_readout, **options),
        read_with_grads(reference, *inputs, grad_readout, **options),
        **FP32_TOLERANCE,
    )


def test_all_valid_masks_equal_the_unmasked_read():
    inputs = make_inputs(2, 4, 6, 40, 20, seed=5)  # N = 40, M = 20
    grad_readout = torch.randn(2, 6, 20, generator=torch.Generator().manual_seed(5))
    options = dict(
        memory_mask=torch.ones(2, 40, dtype=torch.bool),
        query_mask=torch.ones(2, 20, dtype=torch.bool),
    )
    assert_all_close(
        read_with_grads(packed, *inputs, grad_readout, **options),
        read_with_grads(kernels.memory_read_triton, *inputs, grad_readout),
        atol=1e-6,
        rtol=1e-6,
    )


def test_nan_outside_the_regions_never_reaches_the_output():
    """The packed tail holds masked pixels (to fill each element's slots up to the longest
    region): the kernel must leave them out as it leaves out masked pixels."""
    inputs, grad_readout = small_inputs(seed=6)
    memory_mask, query_mask = box_masks()
    query_key, memory_key, memory_value = inputs
    poisoned = (
        query_key.masked_fill(~query_mask.unsqueeze(1), float("nan")),
        memory_key.masked_fill(~memory_mask.unsqueeze(1), float("nan")),
        memory_value.masked_fill(~memory_mask.unsqueeze(1), float("nan")),
    )
    options = dict(memory_mask=memory_mask, query_mask=query_mask)
    result = read_with_grads(packed, *poisoned, grad_readout, **options)
    assert all(torch.isfinite(t).all() for t in result)
    assert_all_close(
        result, read_with_grads(reference, *inputs, grad_readout, **options), **FP32_TOLERANCE
    )


# -- block pairs computed ----------------------------------------------------------------------
def raster_block_pairs(query_mask, memory_mask):
    """The (query block, memory block) pairs the unpacked masked call computes: every pair of
    raster-order blocks holding a valid pixel each (what
    test_memory_read_kernel.py::test_masked_blocks_are_skipped_not_computed counts)."""

    def live_blocks(mask, block):
        padded = torch.nn.functional.pad(mask, (0, -mask.shape[1] % block))
        return padded.view(mask.shape[0], -1, block).any(dim=2).sum(dim=1)

    pairs = live_blocks(query_mask, INTERPRETER_BLOCK_M) * live_blocks(
        memory_mask, INTERPRETER_BLOCK_N
    )
    return int(pairs.sum())


# area: (grid (H, W), T, the boxes (y0, y1, x0, x1) of the two batch elements); each box's
# corners off the 16-pixel blocks, and a 5% box still spans several blocks
BLOCK_CASES = {
    "20%": ((20, 24), 2, [(3, 10, 5, 18), (11, 19, 9, 21)]),  # 91 and 96 of 480 pixels
    "5%": ((24, 40), 2, [(3, 9, 5, 13), (11, 16, 9, 19)]),  # 48 and 50 of 960 pixels
}


def block_case(area):
    (height, width), frames, boxes = BLOCK_CASES[area]
    query_mask = torch.stack([box_mask(height, width, [box]) for box in boxes])
    memory_mask = torch.stack([box_mask(height, width, [box] * frames) for box in boxes])
    inputs = make_inputs(2, 8, 16, frames * height * width, height * width, seed=7)
    return inputs, query_mask, memory_mask


@pytest.mark.parametrize("area", list(BLOCK_CASES))
def test_packed_read_computes_near_the_ideal_block_pairs(area):
    """Ideal: Σ_b m_b·n_b / (BLOCK_M·BLOCK_N). Packed: at most 1.5× that; the unpacked
    call's raster-order blocks on the same masks: more than 1.5× (3.9× and 6.9× here)."""
    (query_key, memory_key, memory_value), query_mask, memory_mask = block_case(area)
    fractions = query_mask.float().mean(dim=1)
    target = 0.2 if area == "20%" else 0.05
    assert torch.allclose(fractions, torch.tensor(target), rtol=0.06)
    counter = torch.zeros(1, dtype=torch.int32)
    readout = region_pack.packed_memory_read_triton(
        query_key,
        memory_key,
        memory_value,
        query_mask=query_mask,
        memory_mask=memory_mask,
        block_counter=counter,
    )
    ratio = region_pack.computed_over_ideal(counter, query_mask, memory_mask, value_channels=16)
    assert ratio <= 1.5, f"{area}: packed computes {ratio:.2f}× the ideal block pairs"
    ideal = region_pack.ideal_block_pairs(query_mask, memory_mask)
    unpacked_ratio = raster_block_pairs(query_mask, memory_mask) / ideal
    assert unpacked_ratio > 1.5, f"{area}: unpacked {unpacked_ratio:.2f}× proves nothing"
    expected = memory_read(
        query_key,
        memory_key,
        memory_value,
        query_mask=query_mask,
        memory_mask=memory_mask,
        backend="torch",
    )
    torch.testing.assert_close(readout, expected, **FP32_TOLERANCE)


@pytest.mark.slow
@pytest.mark.parametrize("area", list(BLOCK_CASES))
def test_unpacked_call_computes_the_raster_block_pairs(area):
    """The kernel's own counter on the unpacked masked call (slow under the interpreter: it
    visits every memory block for every live query block)."""
    (query_key, memory_key, memory_value), query_mask, memory_mask = block_case(area)
    counter = torch.zeros(1, dtype=torch.int32)
    kernels.memory_read_triton(
        query_key,
        memory_key,
        memory_value,
        query_mask=query_mask,
        memory_mask=memory_mask,
        block_counter=counter,
    )
    assert counter.item() == raster_block_pairs(query_mask, memory_mask)
    ratio = region_pack.computed_over_ideal(counter, query_mask, memory_mask, value_channels=16)
    assert ratio > 1.5


# -- the reference's box crop ------------------------------------------------------------------
def general_gather(monkeypatch):
    """Make the reference gather every mask by index (no mask is taken for a box)."""
    monkeypatch.setattr(
        memory_read_module,
        "_box_runs_per_element",
        lambda masks, frame_pixels: [None] * masks.shape[0],
    )


def test_box_runs_describe_a_box_per_frame():
    height, width = GRID
    mask = box_mask(height, width, [(1, 4, 2, 6), None, (2, 5, 0, 7), (3, 4, 1, 3)])
    runs = memory_read_module._box_runs(mask, height * width)
    frame = height * width
    assert runs == [
        (1 * width + 2, 3, 4, width),  # three rows of 4 pixels
        (2 * frame + 2 * width, 1, 3 * width, 3 * width),  # full rows: one run
        (3 * frame + 3 * width + 1, 1, 2, 2),  # one row
    ]
    assert memory_read_module._box_runs(torch.zeros(frame, dtype=torch.bool), frame) is None
    # not a box: rows of unequal lengths, or unequal gaps between rows
    uneven = box_mask(height, width, [(1, 3, 2, 6)])
    uneven[4 * width + 2] = True
    assert memory_read_module._box_runs(uneven, frame) is None
    gapped = box_mask(height, width, [(0, 2, 0, 2)]) | box_mask(height, width, [(3, 4, 0, 2)])
    assert memory_read_module._box_runs(gapped, frame) is None
    # a batch is described at once, each element as it is alone: boxes, an empty element, a
    # broken one (a gap, or rows of unequal lengths) beside elements that are boxes
    elements = [
        box_mask(height, width, [(1, 4, 2, 6), (2, 5, 0, 7)]),
        torch.zeros(2 * frame, dtype=torch.bool),
        torch.cat([box_mask(height, width, [(0, 2, 1, 3)]), uneven]),
        torch.cat([gapped, box_mask(height, width, [(2, 3, 3, 5)])]),
        box_mask(height, width, [None, (0, 5, 0, 1)]),
        box_mask(height, width, [(1, 2, 1, 2), None]),
    ]
    batch = torch.stack(elements)
    together = memory_read_module._box_runs_per_element(batch, frame)
    assert together == [memory_read_module._box_runs(element, frame) for element in batch]
    assert [runs is None for runs in together] == [False, True, True, True, False, False]
    assert together[4] == [(frame, 5, 1, width)] and together[5] == [(width + 1, 1, 1, 1)]


@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_reference_box_crop_equals_the_general_gather(similarity, monkeypatch):
    """Boxes cropped by strided slices read exactly what the index gather reads: boxes that
    differ per frame and per batch element, none aligned, an empty frame, full-width rows,
    forward and gradients, with a query mask, a memory mask or both: bit for bit, as the
    dense read gets the same pixels in the same order."""
    inputs, grad_readout = small_inputs(seed=8)
    memory_mask, query_mask = box_masks(
        [[(1, 4, 2, 7), None, (2, 5, 0, 7)], [(0, 2, 1, 5), (3, 5, 0, 7), (1, 4, 4, 6)]]
    )
    # the test is about the slicing: count that the reference takes and puts by slices
    slicing_calls = []
    for name in ("_take_runs", "_put_runs"):
        sliced_by = getattr(memory_read_module, name)

        def spy(*args, sliced_by=sliced_by, name=name):
            slicing_calls.append(name)
            return sliced_by(*args)

        monkeypatch.setattr(memory_read_module, name, spy)
    for masks, calls in (
        (dict(memory_mask=memory_mask, query_mask=query_mask), 3 * 2 + 2),
        (dict(memory_mask=memory_mask), 2 * 2),
        (dict(query_mask=query_mask), 1 * 2 + 2),
    ):
        options = dict(similarity=similarity, **masks)
        slicing_calls.clear()
        sliced = read_with_grads(reference, *inputs, grad_readout, **options)
        assert len(slicing_calls) == calls  # per element: keys and values, query keys, readout
        with monkeypatch.context() as patch:
            general_gather(patch)
            gathered = read_with_grads(reference, *inputs, grad_readout, **options)
        assert_all_close(sliced, gathered, atol=0, rtol=0)


def test_reference_box_crop_with_bias_gaussian_and_return_top(monkeypatch):
    """The per-pixel extras are cropped by index beside the sliced keys and values."""
    inputs, _ = small_inputs(seed=9)
    inputs = [x.double() for x in inputs]
    memory_mask, query_mask = box_masks()
    memories, queries = memory_mask.shape[1], query_mask.shape[1]
    g = torch.Generator().manual_seed(9)
    options = dict(
        memory_mask=memory_mask,
        query_mask=query_mask,
        bias=torch.randn(2, memories, queries, generator=g, dtype=torch.float64),
        gaussian_centers=torch.rand(2, memories, 2, generator=g, dtype=torch.float64) * 5,
        gaussian_sigma=1 + torch.rand(2, memories, generator=g, dtype=torch.float64),
        query_hw=GRID,
        return_top=4,
    )
    sliced = reference(*inputs, **options)
    general_gather(monkeypatch)
    gathered = reference(*inputs, **options)
    for a, b in zip(sliced, gathered):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.slow
def test_reference_box_crop_gradcheck():
    g = torch.Generator().manual_seed(10)

    def leaf(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

    # a 3×4 grid, T = 2: boxes per frame and per element, and one element's empty frame
    memory_mask = torch.stack(
        [box_mask(3, 4, [(0, 2, 1, 3), None]), box_mask(3, 4, [(1, 3, 0, 4), (2, 3, 1, 2)])]
    )
    query_mask = torch.stack([box_mask(3, 4, [(1, 3, 2, 4)]), box_mask(3, 4, [(0, 2, 0, 3)])])
    for mask in (*memory_mask, *query_mask):  # the slicing is what is checked
        assert memory_read_module._box_runs(mask, 12) is not None
    queries, memories = query_mask.shape[1], memory_mask.shape[1]
    query_key, memory_key, memory_value = (
        leaf(2, 3, queries),
        leaf(2, 3, memories),
        leaf(2, 2, memories),
    )

    def read(*inputs):
        return memory_read(*inputs, memory_mask=memory_mask, query_mask=query_mask)

    assert torch.autograd.gradcheck(read, (query_key, memory_key, memory_value))
