"""RMNet's regional memory reader: regions, the two semantics, query-region modes, config."""

from __future__ import annotations

import math

import hydra
import pytest
import torch
from helpers import two_object_clip
from hydra import compose, initialize_config_dir

import vos.config
from vos.model.memory import MemoryBank
from vos.model.readers.base import FrameFeatures, ReaderState
from vos.model.readers.rmnet import RMNetReader, cells_in_boxes
from vos.model.readers.stm import STMReader

STRIDE = 16


# Table 5's row without regions (experiments/claims.yaml)
RMNET_WITHOUT_REGIONS = ["model.reader.memory_region=false", "model.reader.query_region=false"]


def make_frame(keys: torch.Tensor, index: int = 0, values: int = 4, flow=None) -> FrameFeatures:
    """A frame whose res4 key is ``keys [B, Ck, h, w]``; input resolution is 16× the grid."""
    batch, _, height, width = keys.shape
    generator = torch.Generator().manual_seed(100 + index)
    return FrameFeatures(
        index=index,
        frames=torch.zeros(batch, 3, height * STRIDE, width * STRIDE),
        features={},
        keys={"res4": keys},
        query_value=torch.randn(batch, values, height, width, generator=generator),
        flow=flow,
    )


def square_probs(batch, objects, size_hw, squares) -> torch.Tensor:
    """Soft masks ``[B, O, H, W]``: ``squares[o] = (y0, x0, y1, x1)`` in pixels (or None)."""
    probs = torch.zeros(batch, objects, *size_hw)
    for obj, square in enumerate(squares):
        if square is not None:
            y0, x0, y1, x1 = square
            probs[:, obj, y0:y1, x0:x1] = 0.9
    return probs


def remember(reader, memory, keys, values, probs=None, index=0):
    frame = make_frame(keys, index)
    extras = reader.memorize(frame, {"res4": values}, memory, object_probs=probs)
    memory.add(index, {"res4": keys}, {"res4": values}, extras=extras, permanent=index == 0)


def random_memory(reader, batch=2, objects=2, key_channels=8, values=4, grid=(4, 5), frames=3):
    generator = torch.Generator().manual_seed(0)
    memory = MemoryBank()
    for t in range(frames):
        keys = torch.randn(batch, key_channels, *grid, generator=generator)
        vals = torch.randn(batch, objects, values, *grid, generator=generator)
        remember(reader, memory, keys, vals, None, t)
    query = make_frame(torch.randn(batch, key_channels, *grid, generator=generator), frames)
    return memory, query


# -- regions ---------------------------------------------------------------------------------
def test_cells_in_boxes_rules():
    boxes = torch.tensor([[[17, 0, 33, 16]]])  # rows 17..32 touch cells 1 and 2
    any_cell = cells_in_boxes(boxes, (4, 4), STRIDE, "any")[0, 0]
    top_left = cells_in_boxes(boxes, (4, 4), STRIDE, "top_left")[0, 0]
    assert any_cell[:, 0].tolist() == [False, True, True, False]
    assert top_left[:, 0].tolist() == [False, False, True, False]  # only pixel 32 is a corner
    assert not any_cell[:, 1:].any()


def test_memory_region_is_padded_box_and_absent_object_is_empty():
    reader = RMNetReader(key_channels=8, value_channels=4, padding=1)
    probs = square_probs(1, 2, (128, 128), [(48, 64, 64, 80), None])  # object 0 in cell (3, 4)
    frame = make_frame(torch.zeros(1, 8, 8, 8))
    extras = reader.memorize(frame, {"res4": torch.zeros(1, 2, 4, 8, 8)}, MemoryBank(), probs)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:5, 3:6] = True
    assert torch.equal(extras["region"][0, 0], expected)
    assert not extras["region"][0, 1].any()
    assert extras["object_cells"][0, 0].sum() == 1 and extras["object_cells"][0, 0, 3, 4]


def test_memorize_without_masks_is_whole_frame():
    reader = RMNetReader(key_channels=8, value_channels=4)
    frame = make_frame(torch.zeros(2, 8, 3, 5))
    extras = reader.memorize(frame, {"res4": torch.zeros(2, 3, 4, 3, 5)}, MemoryBank())
    assert extras["region"].shape == (2, 3, 3, 5) and extras["region"].all()


# -- equality with STM -------------------------------------------------------------------------
@pytest.mark.parametrize("semantics", ["paper", "official"])
@pytest.mark.parametrize("how", ["switches_off", "regions_cover_frame"])
def test_all_true_regions_equal_stm(semantics, how):
    if how == "switches_off":
        reader = RMNetReader(
            8, 4, memory_region=False, query_region_mode="none", region_semantics=semantics
        )
    else:
        reader = RMNetReader(
            8, 4, padding=10, query_region_mode="previous", region_semantics=semantics
        )
    stm = STMReader(8, 4)
    generator = torch.Generator().manual_seed(1)
    memory = MemoryBank()
    grid = (4, 5)
    for t in range(3):
        keys = torch.randn(2, 8, *grid, generator=generator)
        values = torch.randn(2, 2, 4, *grid, generator=generator)
        # a small object in the middle: padding 10 cells covers the frame
        probs = square_probs(2, 2, (64, 80), [(16, 16, 48, 48), (20, 40, 40, 60)])
        remember(reader, memory, keys, values, probs, t)
    query = make_frame(torch.randn(2, 8, *grid, generator=generator), 3)
    state = ReaderState(previous_probs=square_probs(2, 2, (64, 80), [(16, 16, 48, 48)] * 2))
    ours = reader.read(query, memory, state).features["res4"]
    theirs = stm.read(query, memory, state).features["res4"]
    assert ours.shape == theirs.shape == (2, 2, 8, *grid)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


# -- absent objects --------------------------------------------------------------------------
def test_absent_memory_object_contributes_nothing():
    reader = RMNetReader(8, 4, padding=1, query_region_mode="none")
    generator = torch.Generator().manual_seed(2)
    grid, size = (4, 4), (64, 64)
    keys = [torch.randn(1, 8, *grid, generator=generator) for _ in range(2)]
    values = [torch.randn(1, 2, 4, *grid, generator=generator) for _ in range(2)]
    # object 1 absent in frame 0, present in frame 1; object 0 present in frame 0 only
    probs = [
        square_probs(1, 2, size, [(0, 0, 16, 16), None]),
        square_probs(1, 2, size, [None, (32, 32, 48, 48)]),
    ]
    both = MemoryBank()
    for t in range(2):
        remember(reader, both, keys[t], values[t], probs[t], t)
    only_second = MemoryBank()
    remember(reader, only_second, keys[1], values[1], probs[1], 0)
    query = make_frame(torch.randn(1, 8, *grid, generator=generator), 2)
    read_both = reader.read(query, both, ReaderState()).features["res4"]
    read_second = reader.read(query, only_second, ReaderState()).features["res4"]
    torch.testing.assert_close(read_both[:, 1], read_second[:, 1])
    # object 0 is absent from every frame of `only_second`: its read is 0, its query value stays
    assert torch.all(read_second[:, 0, :4] == 0)
    torch.testing.assert_close(read_second[:, 0, 4:], query.query_value)


def test_late_object_regions_are_padded():
    reader = RMNetReader(8, 4, padding=1, query_region_mode="none")
    memory, query = random_memory(reader, batch=1, objects=1, grid=(4, 4), frames=1)
    memory.add_objects(1)  # the new object has no value in frame 0
    out = reader.read(query, memory, ReaderState()).features["res4"]
    assert out.shape == (1, 2, 8, 4, 4)
    assert torch.all(out[:, 1, :4] == 0)


# -- paper vs official semantics -------------------------------------------------------------
def hand_case(semantics, regional_query_value=True):
    """Memory 2×2 grid, one frame: the top row (2 pixels) in the region, the bottom row out."""
    reader = RMNetReader(
        2,
        1,
        padding=0,
        query_region_mode="previous",
        region_semantics=semantics,
        min_pixels=1,
        regional_query_value=regional_query_value,
    )
    memory_keys = torch.tensor([[1.0, 0.5], [2.0, -1.0]]).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    memory_keys[:, 1] = torch.tensor([[0.3, -0.2], [0.7, 0.1]])
    memory_values = torch.tensor([[1.0, 3.0], [5.0, 7.0]]).view(1, 1, 1, 2, 2)
    memory = MemoryBank()
    remember(
        reader, memory, memory_keys, memory_values, square_probs(1, 1, (32, 32), [(0, 0, 16, 32)])
    )
    query_keys = torch.tensor([[0.4, -0.6], [1.2, 0.8]]).view(1, 2, 1, 2).expand(1, 2, 2, 2)
    query = make_frame(query_keys.contiguous(), 1, values=1)
    # the query region: the left column only (query pixels (0, 1) and (1, 1) are outside)
    state = ReaderState(previous_probs=square_probs(1, 1, (32, 32), [(0, 0, 32, 16)]))
    out = reader.read(query, memory, state).features["res4"][0, 0]  # [2, 2, 2]
    return out, memory_keys.flatten(2)[0], memory_values.flatten(), query_keys.flatten(2)[0], query


@pytest.mark.parametrize("regional_query_value", [True, False])
@pytest.mark.parametrize("autograd", [True, False])
@pytest.mark.parametrize("semantics", ["paper", "official"])
def test_paper_and_official_semantics(semantics, autograd, regional_query_value):
    """By hand, in training (autograd) and at inference, where the readout is assembled in
    place."""
    with torch.inference_mode(not autograd):
        out, memory_keys, memory_values, query_keys, query = hand_case(
            semantics, regional_query_value
        )
    read, query_value = out[0].flatten(), out[1].flatten()
    inside_memory = [0, 1]  # top row
    inside_query = [0, 2]  # left column in raster order
    for q in range(4):
        logits = (memory_keys.T @ query_keys[:, q]) / math.sqrt(2)  # s(p, q) for the 4 p
        in_weights = logits[inside_memory].exp()
        in_values = memory_values[inside_memory]
        if q in inside_query and semantics == "paper":
            expected = (in_weights * in_values).sum() / in_weights.sum()
        elif q in inside_query:  # zeroed memory keys: logit 0, weight e^0 = 1, value 0
            expected = (in_weights * in_values).sum() / (in_weights.sum() + 2)
        elif semantics == "paper":  # Eq. 7: no similarity at all -> reads 0
            expected = torch.tensor(0.0)
        else:  # zeroed query key: uniform weights over the 4 memory pixels, 2 with value 0
            expected = in_values.sum() / 4
        torch.testing.assert_close(read[q], expected, atol=1e-6, rtol=1e-6)
        # the regional query value A_Q · v_Q (§3.1.2) in both semantics; v_Q without it
        inside = q in inside_query or not regional_query_value
        own = query.query_value.flatten()[q] if inside else torch.tensor(0.0)
        torch.testing.assert_close(query_value[q], own)


# -- query regions ---------------------------------------------------------------------------
def query_region_of(reader, previous_probs, flow=None, memory=None, query_keys=None):
    if memory is None:
        memory, _ = random_memory(reader, batch=1, objects=1, grid=(8, 8), frames=1)
    keys = query_keys if query_keys is not None else torch.zeros(1, 8, 8, 8)
    query = make_frame(keys, 5, flow=flow)
    return reader.query_regions(query, memory, ReaderState(previous_probs=previous_probs))[0, 0]


def test_query_region_eta_fallback_and_first_frame():
    reader = RMNetReader(8, 4, padding=0, query_region_mode="previous")
    probs = torch.zeros(1, 1, 128, 128)
    probs[0, 0, 40, 40:43] = 1.0  # 3 pixels < η = 10
    assert query_region_of(reader, probs).all()
    probs[0, 0, 40:44, 40:43] = 1.0  # 12 pixels
    assert query_region_of(reader, probs).sum() == 1
    assert query_region_of(reader, None).all()  # no previous mask: the whole frame


def test_flow_mode_warps_and_previous_mode_ignores_flow():
    probs = square_probs(1, 1, (128, 128), [(32, 32, 48, 48)])  # cell (2, 2)
    flow = torch.zeros(1, 2, 128, 128)
    flow[:, 0], flow[:, 1] = -32.0, -16.0  # backward flow: the object moved by (+16, +32) px
    flow_reader = RMNetReader(8, 4, padding=1, query_region_mode="flow")
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:5, 3:6] = True  # cell (3, 4) padded by 1 cell
    assert torch.equal(query_region_of(flow_reader, probs, flow), expected)
    with pytest.raises(ValueError, match="flow"):
        query_region_of(flow_reader, probs, None)
    previous_reader = RMNetReader(8, 4, padding=1, query_region_mode="previous")
    unmoved = torch.zeros(8, 8, dtype=torch.bool)
    unmoved[1:4, 1:4] = True
    assert torch.equal(query_region_of(previous_reader, probs, flow), unmoved)
    assert torch.equal(query_region_of(previous_reader, probs, None), unmoved)


def test_official_query_box_is_clamped_to_the_frame_inside_the_padding():
    """The released code warps and boxes the unpadded frame, then zero-pads the box map: a box
    that φ pushes past the frame's edge stops at the frame, so with the top-left-pixel rule a
    cell whose top-left pixel is padding is out. Boxed on the padded canvas it would be in."""
    frame_h, frame_w = 120, 118  # padded to 128 x 128: 4 rows above, 5 columns left
    probs = torch.zeros(1, 1, 128, 128)
    probs[0, 0, 4 + 20 : 4 + 40, 5 + 30 : 5 + 50] = 0.9  # near the top-left of the frame
    flow = torch.zeros(1, 2, 128, 128)
    flow[:, 0] = -8.0  # the object moved 8 px right
    memory, _ = random_memory(RMNetReader(8, 4), batch=1, objects=1, grid=(8, 8), frames=1)
    for mode, shift in (("previous", 0), ("flow", 8)):
        reader = RMNetReader(8, 4, padding=2, query_region_mode=mode, region_semantics="official")
        query = make_frame(torch.zeros(1, 8, 8, 8), 5, flow=flow)
        state = ReaderState(previous_probs=probs)
        canvas = reader.query_regions(query, memory, state)[0, 0]
        query.frame_size = (frame_h, frame_w)
        framed = reader.query_regions(query, memory, state)[0, 0]
        # box rows 24 - 32 -> clamped to 0 (canvas) or to the frame's row 4; columns
        # 35 + shift - 32 (>= 5, inside the frame either way); ends 44 + 32, 55 + shift + 32
        expected = torch.zeros(8, 8, dtype=torch.bool)
        expected[1:5, 1 : (55 + shift + 32 - 1) // 16 + 1] = True
        assert torch.equal(framed, expected), mode
        assert canvas[0].any() and torch.equal(canvas[1:], framed[1:]), mode


def test_best_match_box_is_around_best_matching_pixel():
    reader = RMNetReader(2, 1, padding=1, query_region_mode="best_match")
    memory_keys = torch.zeros(1, 2, 8, 8)
    memory_keys[0, 1] = 1.0
    memory_keys[0, :, 2, 2] = torch.tensor([1.0, 0.0])  # the object's only cell
    memory_keys[0, :, 6, 6] = torch.tensor([3.0, 0.0])  # a better match, but outside the mask
    memory = MemoryBank()
    remember(
        reader,
        memory,
        memory_keys,
        torch.ones(1, 1, 1, 8, 8),
        square_probs(1, 1, (128, 128), [(32, 32, 48, 48)]),
    )
    query_keys = torch.zeros(1, 2, 8, 8)
    query_keys[0, 1] = 0.1
    query_keys[0, :, 6, 5] = torch.tensor([5.0, 0.0])
    query_keys[0, :, 0, 0] = torch.tensor([-5.0, 9.0])  # matches the background, not the object
    previous = square_probs(1, 1, (128, 128), [(0, 0, 16, 16)])
    region = query_region_of(reader, previous, memory=memory, query_keys=query_keys)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[5:8, 4:7] = True  # the 3×3-cell padded object box centred on (6, 5)
    assert torch.equal(region, expected)


def test_needs_flow_only_for_flow_mode():
    for mode in ("flow", "previous", "best_match", "none"):
        assert RMNetReader(8, 4, query_region_mode=mode).needs.needs_flow == (mode == "flow")
    assert not RMNetReader(8, 4, query_region=False).needs.needs_flow
    with pytest.raises(ValueError):
        RMNetReader(8, 4, query_region_mode="gaussian")
    with pytest.raises(ValueError):
        RMNetReader(8, 4, region_semantics="masked")


def test_regional_read_never_computes_outside_the_regions():
    """Regions make `memory_read` crop, not mask (the speed claim, §3.2): keys and values
    outside R_M^j and query keys outside R_Q^j are poisoned with NaN, and the read stays
    finite and equal to the clean read, which is Eq. 3–7 written out (softmax over the
    memory regions of every frame, 0 outside the query region). Computing every pixel and
    masking with −inf afterwards gives NaN·0 = NaN and fails."""
    reader = RMNetReader(8, 4, padding=0, query_region_mode="previous")
    generator = torch.Generator().manual_seed(11)
    grid, size = (4, 5), (64, 80)
    squares = [  # per memory frame, per batch element (one object)
        [(0, 0, 32, 32), (32, 48, 64, 80)],
        [(16, 16, 48, 48), (0, 32, 16, 64)],
    ]
    keys, values, probs = [], [], []
    for frame_squares in squares:
        keys.append(torch.randn(2, 8, *grid, generator=generator, dtype=torch.float64))
        values.append(torch.randn(2, 1, 4, *grid, generator=generator, dtype=torch.float64))
        probs.append(torch.cat([square_probs(1, 1, size, [s]) for s in frame_squares]))
    previous = torch.cat(
        [square_probs(1, 1, size, [s]) for s in [(0, 16, 32, 48), (32, 0, 64, 32)]]
    )
    query_keys = torch.randn(2, 8, *grid, generator=generator, dtype=torch.float64)

    clean = MemoryBank()
    for t in range(2):
        remember(reader, clean, keys[t], values[t], probs[t], t)
    regions = [clean.entries[t].extras["region"][:, 0] for t in range(2)]  # [B, h, w]
    query = make_frame(query_keys, 2)
    query.query_value = query.query_value.double()
    state = ReaderState(previous_probs=previous)
    query_region = reader.query_regions(query, clean, state)[:, 0]  # [B, h, w]
    for region in [*regions, query_region]:  # every region is a strict part of the frame
        assert region.flatten(1).any(dim=1).all() and not region.flatten(1).all(dim=1).any()
    out = reader.read(query, clean, state).features["res4"][:, 0]  # [B, 2·Cv, h, w]

    nan = float("nan")
    poisoned = MemoryBank()
    for t in range(2):
        outside = ~regions[t]
        poisoned_keys = keys[t].masked_fill(outside[:, None], nan)
        poisoned_values = values[t].masked_fill(outside[:, None, None], nan)
        poisoned.add(t, {"res4": poisoned_keys}, {"res4": poisoned_values}, permanent=t == 0)
        poisoned.entries[t].extras = clean.entries[t].extras
    poisoned_query = make_frame(query_keys.masked_fill(~query_region[:, None], nan), 2)
    poisoned_query.query_value = query.query_value
    out_poisoned = reader.read(poisoned_query, poisoned, state).features["res4"][:, 0]
    assert torch.isfinite(out_poisoned).all()
    torch.testing.assert_close(out_poisoned, out, rtol=0, atol=0)

    for b in range(2):
        inside_memory = torch.cat([r[b].flatten() for r in regions])  # [T·h·w]
        memory_keys = torch.stack([k[b] for k in keys], dim=1).flatten(1)[:, inside_memory]
        memory_values = torch.stack([v[b, 0] for v in values], dim=1).flatten(1)
        memory_values = memory_values[:, inside_memory]
        own_value = query.query_value[b].flatten(1)
        for q in range(grid[0] * grid[1]):
            read, value = out[b, :4].flatten(1)[:, q], out[b, 4:].flatten(1)[:, q]
            if query_region[b].flatten()[q]:
                logits = memory_keys.T @ query_keys[b].flatten(1)[:, q] / math.sqrt(8)
                expected = memory_values @ torch.softmax(logits, dim=0)
                torch.testing.assert_close(read, expected, rtol=1e-12, atol=1e-12)
                torch.testing.assert_close(value, own_value[:, q], rtol=0, atol=0)
            else:  # Eq. 7: no similarity at all -> 0; the regional query value A_Q·v_Q is 0
                assert not read.any() and not value.any()


# -- config ------------------------------------------------------------------------------------
def test_config_composes_and_builds_reader():
    with initialize_config_dir(config_dir=str(vos.config.CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["model=rmnet"])
    assert cfg.model.name == "rmnet"
    reader = hydra.utils.instantiate(cfg.model.reader)
    assert isinstance(reader, RMNetReader)
    assert reader.needs.needs_flow and reader.region_semantics == "paper"
    assert reader.padding == 1 and reader.min_pixels == 10  # φ at the tiny scale (below)
    assert reader.needs.key_scales == {"res4": cfg.model.key_channels}


def test_padding_scales_with_the_feature_grid():
    """φ = 4 cells on the paper's 30×54 res4 grid (480p) is a fraction of the frame: at the
    tiny scale's 8×14 grid (128×224 frames) the config gives the same fraction, 1 cell, not 4
    cells that would make most boxes cover most of the frame (`vos.ablate rmnet`'s Table 5)."""
    paddings = {}
    for size in ("tiny", "paper"):
        with initialize_config_dir(config_dir=str(vos.config.CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=["model=rmnet", f"model/size={size}"])
        paddings[size] = hydra.utils.instantiate(cfg.model.reader).padding
        assert cfg.model.bench.region_padding_cells == paddings[size]
    assert paddings == {"tiny": 1, "paper": 4}
    with initialize_config_dir(config_dir=str(vos.config.CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["model=rmnet"])
    tiny_grid = cfg.dataset.height // 16  # the generated frames' res4 rows
    assert abs(paddings["tiny"] / tiny_grid - paddings["paper"] / 30) < 0.02


def test_reader_inside_the_network_reads_the_given_regions():
    """`VOSNetwork.memorize` hands the given masks to `RMNetReader.memorize` (the stored region
    is each mask's box on the res4 grid) and `encode_frame`'s flow reaches the query region (the
    previous mask warped by it): the readout the decoder gets is zero outside the warped box and
    not inside it, and gradients reach the query key."""
    from vos.model.network import build_network

    with initialize_config_dir(config_dir=str(vos.config.CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "model=rmnet",
                "model.key_channels=8",
                "model.value_channels=16",
                "model.decoder_channels=8",
                "model.reader.padding=0",
            ],
        )
    network = build_network(cfg.model)
    readouts = []  # what the decoder receives: the res4 readout [B, O, 2·Cv, h, w]
    network.decoder.register_forward_pre_hook(lambda _, args: readouts.append(args[0]))
    frames = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(12))
    given = square_probs(1, 2, (64, 64), [(8, 8, 24, 24), (32, 16, 56, 28)])
    memory = MemoryBank()
    network.memorize(memory, network.encode_frame(frames, 0), given, permanent=True)
    boxes = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    boxes[0, 0, 0:2, 0:2] = True  # pixels 8..23 touch cells 0 and 1
    boxes[0, 1, 2:4, 1] = True
    assert torch.equal(memory.entries[0].extras["region"], boxes)

    flow = torch.zeros(1, 2, 64, 64)
    flow[:, 0] = -32.0  # backward flow: everything moved 32 px (two cells) to the right
    query = network.encode_frame(frames, 1, flow=flow)
    query.keys["res4"].retain_grad()
    logits = network.segment(query, memory, ReaderState(previous_probs=given))
    assert logits.shape == (1, 3, 64, 64)
    moved = torch.roll(boxes, 2, dims=3)  # the boxes two cells to the right (none wraps)
    (readout,) = readouts
    assert readout.shape == (1, 2, 32, 4, 4)
    assert not readout.masked_fill(moved[:, :, None], 0).any()
    assert readout.abs().sum(dim=2)[moved].gt(0).all()
    logits.logsumexp(dim=1).mean().backward()
    assert query.keys["res4"].grad.abs().sum() > 0


@pytest.mark.parametrize("semantics", ["paper", "official"])
def test_read_decides_its_masks_without_reading_the_device(semantics, monkeypatch):
    """No `bool(mask.all())` in the reader: whether a mask can be dropped is known on the host
    (memory validity) or the mask is passed (regions), so a read costs no device sync of its
    own (the CPU reference's crop-then-read reads its masks back; a kernel does not)."""
    import sys

    reader = RMNetReader(8, 4, padding=1, query_region_mode="previous", region_semantics=semantics)
    memory, query = random_memory(reader)
    state = ReaderState(previous_probs=square_probs(2, 2, (64, 80), [(16, 16, 48, 48)] * 2))
    callers = []
    for name in ("__bool__", "item", "tolist"):
        original = getattr(torch.Tensor, name)

        def recording(self, *args, _original=original, **kwargs):
            callers.append(sys._getframe(1).f_code.co_filename)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, recording)
    reader.read(query, memory, state)
    monkeypatch.undo()
    assert not [f for f in callers if f.endswith("readers/rmnet.py")]


@pytest.mark.parametrize(
    ("memory_region", "query_region", "masks"),
    [(False, False, (False, False)), (True, False, (True, False)), (False, True, (False, True))],
)
def test_a_side_read_globally_passes_no_mask(memory_region, query_region, masks, monkeypatch):
    """Table 5's global side reads the memory (or query) in place: no mask, so the CPU
    reference does not crop the whole memory as a box; the regional side keeps its mask."""
    import vos.model.readers.rmnet as rmnet

    reader = RMNetReader(
        8,
        4,
        padding=1,
        memory_region=memory_region,
        query_region=query_region,
        query_region_mode="previous",
    )
    generator = torch.Generator().manual_seed(3)
    memory = MemoryBank()
    probs = square_probs(1, 2, (64, 80), [(16, 16, 32, 32), (20, 40, 36, 56)])
    for t in range(2):
        keys = torch.randn(1, 8, 4, 5, generator=generator)
        remember(reader, memory, keys, torch.randn(1, 2, 4, 4, 5, generator=generator), probs, t)
    query = make_frame(torch.randn(1, 8, 4, 5, generator=generator), 2)
    state = ReaderState(previous_probs=probs)
    seen = []
    original = rmnet.ops.memory_read

    def recording(*args, memory_mask=None, query_mask=None, **kwargs):
        seen.append((memory_mask is not None, query_mask is not None))
        return original(*args, memory_mask=memory_mask, query_mask=query_mask, **kwargs)

    monkeypatch.setattr(rmnet.ops, "memory_read", recording)
    ours = reader.read(query, memory, state).features["res4"]
    monkeypatch.undo()
    assert seen == [masks]
    if not memory_region and not query_region:  # and the global read is STM's
        theirs = STMReader(8, 4).read(query, memory, state).features["res4"]
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_inference_readout_promotes_dtypes_as_the_training_one():
    """At inference the readout is assembled in place; a query value of another precision than
    the read gives the dtype and values the training path's concatenation gives."""
    reader = RMNetReader(8, 4, padding=0, query_region_mode="previous")
    memory, query = random_memory(reader, batch=1, objects=2, grid=(4, 5), frames=2)
    query.query_value = query.query_value.double()
    previous = torch.rand(1, 2, 64, 80, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        in_place = reader.read(query, memory, ReaderState(previous_probs=previous))
    concatenated = reader.read(query, memory, ReaderState(previous_probs=previous))
    assert in_place.features["res4"].dtype == concatenated.features["res4"].dtype == torch.float64
    torch.testing.assert_close(in_place.features["res4"], concatenated.features["res4"])


def test_without_regions_rmnet_is_stms_run():
    """`model=rmnet` with both regions off builds STM's network with the same initial weights
    from the same seed and segments a clip to the same logits, bit for bit: the claims use
    STM's runs for Table 5's row without regions (experiments/claims.yaml)."""
    from vos.lightning.module import VOSModule

    small = ["model.key_channels=8", "model.value_channels=16", "model.decoder_channels=8"]
    nets = []
    for model in (["model=stm"], ["model=rmnet", *RMNET_WITHOUT_REGIONS]):
        with initialize_config_dir(config_dir=str(vos.config.CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[*model, *small])
        torch.manual_seed(cfg.seed)  # as vos.train seeds before building the module
        nets.append(VOSModule(cfg.model, cfg.optim, cfg.lr_schedule, cfg.loss, cfg.inference))
    stm, rmnet = (module.network for module in nets)
    stm_state, rmnet_state = stm.state_dict(), rmnet.state_dict()
    assert list(stm_state) == list(rmnet_state)
    for name, value in stm_state.items():
        assert torch.equal(rmnet_state[name], value), name
    frames, labels, present, flow = two_object_clip(batch=1)
    outputs = []
    for net in (stm, rmnet):
        torch.manual_seed(2)  # any dropout draws the same
        outputs.append(net.train().segment_clip(frames, labels, present, flow))
    for a, b in zip(*outputs, strict=True):
        assert torch.equal(a, b)
