import math

import pytest
import torch

from vos.ops.geometry import (
    boxes_from_masks,
    expand_index,
    mask_boxes,
    sine_positional_encoding,
    warp_backward,
    warped_mask_boxes,
)


def _mask(height, width, y0, x0, y1, x1):
    m = torch.zeros(1, 1, height, width)
    m[..., y0:y1, x0:x1] = 0.9
    return m


def test_box_around_mask_with_padding_and_clamping():
    boxes, maps = boxes_from_masks(_mask(10, 12, 2, 3, 5, 7), padding=1)
    assert boxes.tolist() == [[[1, 2, 6, 8]]]
    assert maps.sum().item() == 5 * 6
    # a box touching the border is clamped to the frame
    boxes, _ = boxes_from_masks(_mask(10, 12, 0, 9, 3, 12), padding=2)
    assert boxes.tolist() == [[[0, 7, 5, 12]]]
    # below the threshold nothing counts
    weak = _mask(10, 12, 2, 3, 5, 7) * 0.5
    assert boxes_from_masks(weak, min_pixels=1)[0].tolist() == [[[0, 0, 10, 12]]]


def test_too_few_pixels_fall_back_to_full_frame_or_nothing():
    tiny = _mask(8, 8, 3, 3, 5, 5)  # 4 pixels
    boxes, maps = boxes_from_masks(tiny, min_pixels=10)
    assert boxes.tolist() == [[[0, 0, 8, 8]]] and maps.all()
    # η counts pixels exactly: 4 pixels are enough for η = 4, not for η = 5
    assert mask_boxes(tiny, min_pixels=4).tolist() == [[[3, 3, 5, 5]]]
    assert mask_boxes(tiny, min_pixels=5).tolist() == [[[0, 0, 8, 8]]]
    boxes, maps = boxes_from_masks(torch.zeros(1, 1, 8, 8), fallback="empty")
    assert boxes.tolist() == [[[0, 0, 0, 0]]] and not maps.any()
    with pytest.raises(ValueError, match="fallback"):
        boxes_from_masks(tiny, fallback="nope")


def test_warp_moves_a_square_by_the_flow():
    previous = _mask(8, 12, 2, 2, 5, 5)  # frame t-1: square at x 2..4
    flow = torch.zeros(1, 2, 8, 12)
    flow[:, 0] = -3.0  # frame t pixel x came from x - 3: the square moved right by 3
    flow[:, 1] = 1.0  # ... and up by 1 (frame t pixel y came from y + 1)
    warped, valid = warp_backward(previous, flow)
    torch.testing.assert_close(warped, _mask(8, 12, 1, 5, 4, 8) * valid)
    # pixels whose source lies outside frame t-1 are invalid and 0
    assert valid[0, 0, :, :3].sum() == 0 and valid[0, 0, -1].sum() == 0
    assert valid[0, 0, :7, 3:].all()


def _bilinear_by_hand(source, flow):
    """Each pixel p = (i, j) samples source at (j + u, i + v) by its four corners' weights;
    corners outside the frame add nothing; valid where they add up to ≥ 0.9999."""
    _, channels, height, width = source.shape
    warped = torch.zeros_like(source)
    valid = torch.zeros(1, 1, height, width, dtype=source.dtype)
    for i in range(height):
        for j in range(width):
            x, y = j + float(flow[0, 0, i, j]), i + float(flow[0, 1, i, j])
            x0, y0 = math.floor(x), math.floor(y)
            total = 0.0
            for cy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                for cx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                    if 0 <= cy < height and 0 <= cx < width:
                        warped[0, :, i, j] += wy * wx * source[0, :, cy, cx]
                        total += wy * wx
            valid[0, 0, i, j] = float(total >= 0.9999)
    return warped * valid, valid


@pytest.mark.parametrize("flow_grad", [False, True])
def test_warp_is_bilinear_sampling_at_the_flow_with_its_validity(flow_grad):
    """Fractional flow, several channels, samples half outside the frame: against the
    sampling written out per pixel (catches a swapped u/v, a wrong normalisation, a validity
    from the wrong channel), with the flow differentiable or not (two ways to build the
    grid)."""
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(1, 3, 6, 9, generator=generator, dtype=torch.float64)
    flow = torch.randn(1, 2, 6, 9, generator=generator, dtype=torch.float64) * 2.5
    flow[0, 0, 0, 0], flow[0, 1, 0, 0] = -0.5, 0.0  # half the footprint outside: invalid
    warped, valid = warp_backward(source, flow.clone().requires_grad_(flow_grad))
    if flow_grad:
        assert warped.requires_grad
        warped = warped.detach()
    expected, expected_valid = _bilinear_by_hand(source, flow)
    torch.testing.assert_close(valid, expected_valid)
    torch.testing.assert_close(warped, expected)
    assert valid[0, 0, 0, 0] == 0 and 0 < valid.mean() < 1


def _soft_masks(generator, batch, objects, height, width):
    """Rectangles of probabilities in [0.4, 1) over a soft background below 0.3; some
    objects absent, some at the frame's edge."""
    probs = torch.rand(batch, objects, height, width, generator=generator) * 0.3
    for b in range(batch):
        for o in range(objects):
            if torch.rand(1, generator=generator) < 0.15:
                continue
            y0 = int(torch.randint(0, height, (1,), generator=generator))
            x0 = int(torch.randint(0, width, (1,), generator=generator))
            h = int(torch.randint(1, max(2, height // 3), (1,), generator=generator))
            w = int(torch.randint(1, max(2, width // 3), (1,), generator=generator))
            patch = probs[b, o, y0 : y0 + h, x0 : x0 + w]
            patch.copy_(torch.rand(patch.shape, generator=generator) * 0.6 + 0.4)
    return probs


def _flows(generator, batch, height, width):
    """Zero, a translation, per-pixel noise, and a large motion with noise."""
    noise = torch.randn(batch, 2, height, width, generator=generator)
    shift = torch.randn(batch, 2, 1, 1, generator=generator) * 3
    large = torch.tensor([height / 3, -width / 4]).view(1, 2, 1, 1)
    return {
        "zero": torch.zeros(batch, 2, height, width),
        "translation": shift.expand(batch, 2, height, width).contiguous(),
        "noise": noise * 2,
        "large": noise * 0.5 + large,
    }


@pytest.mark.parametrize("seed", range(6))
def test_warped_mask_boxes_are_the_boxes_of_the_warped_masks(seed):
    """The windowed warp gives exactly `mask_boxes(warp_backward(...))`: fractional and
    integer flows, objects leaving the frame, absent objects, η's fallback."""
    generator = torch.Generator().manual_seed(seed)
    batch, objects = 1 + seed % 2, 1 + seed % 3
    height = int(torch.randint(8, 48, (1,), generator=generator))
    width = int(torch.randint(8, 64, (1,), generator=generator))
    probs = _soft_masks(generator, batch, objects, height, width)
    for name, flow in _flows(generator, batch, height, width).items():
        for decimals in (0, 1, 3):
            rounded = flow.round(decimals=decimals)
            for threshold, padding, min_pixels, fallback in (
                (0.5, 0, 1, "full"),
                (0.5, 3, 10, "full"),
                (0.7, 2, 4, "empty"),
            ):
                options = dict(
                    threshold=threshold, padding=padding, min_pixels=min_pixels, fallback=fallback
                )
                want = mask_boxes(warp_backward(probs, rounded)[0], **options)
                got = warped_mask_boxes(probs, rounded, **options)
                assert torch.equal(got, want), (name, decimals, options)


def test_warped_mask_boxes_warp_a_small_object_in_a_window(monkeypatch):
    """A small object moving a little is boxed without warping the frame; large motion, a
    non-finite flow, a NaN in the mask or a threshold of 0 warp it whole, with the same answer
    as warping it whole."""
    import vos.ops.geometry as geometry

    probs = torch.zeros(1, 2, 40, 60)
    probs[0, 0, 5:12, 7:20] = 0.9
    probs[0, 1, 20:30, 30:50] = 0.8
    flow = torch.full((1, 2, 40, 60), 0.75)
    whole_warps = []
    real_warp = geometry.warp_backward
    monkeypatch.setattr(
        geometry, "warp_backward", lambda *a: whole_warps.append(1) or real_warp(*a)
    )
    boxes = warped_mask_boxes(probs, flow, padding=2)
    assert not whole_warps
    # p samples p + 0.75: object 0 (rows 5..11, columns 7..19) is reached from rows 4..10
    # and columns 6..18 (0.75 of 0.9 from the row before it, 0.25 of 0.9 < 0.5 from its last)
    assert boxes.tolist() == [[[2, 4, 13, 21], [17, 27, 31, 51]]]
    flow_far = flow.clone()
    flow_far[0, :, 0, 0] = torch.tensor([50.0, -30.0])  # one far vector: windows the frame's size
    want = mask_boxes(real_warp(probs, flow_far)[0], padding=2)
    assert torch.equal(warped_mask_boxes(probs, flow_far, padding=2), want)
    assert len(whole_warps) == 1
    flow_nan = flow.clone()
    flow_nan[0, 1, 3, 3] = float("nan")
    want = mask_boxes(real_warp(probs, flow_nan)[0], padding=2)
    assert torch.equal(warped_mask_boxes(probs, flow_nan, padding=2), want)
    assert len(whole_warps) == 2
    probs_nan = probs.clone()
    probs_nan[0, 0, 6, 0] = float("nan")  # row 6's max is NaN; its object pixels still count
    want = mask_boxes(real_warp(probs_nan, flow)[0], padding=2)
    assert torch.equal(warped_mask_boxes(probs_nan, flow, padding=2), want)
    assert len(whole_warps) == 3
    want = mask_boxes(real_warp(probs, flow)[0], threshold=0.0, padding=2)
    assert torch.equal(warped_mask_boxes(probs, flow, threshold=0.0, padding=2), want)
    assert len(whole_warps) == 4
    with pytest.raises(ValueError, match="flow must be"):
        warped_mask_boxes(probs, flow[..., :-1])


def test_sine_positional_encoding_is_distinct_per_position():
    code = sine_positional_encoding(16, 5, 7)
    assert code.shape == (16, 5, 7)
    flat = code.flatten(1).T  # [positions, channels]
    assert torch.cdist(flat, flat).add(torch.eye(35) * 1e3).min() > 1e-3
    # (sin, cos) pairs lie on the unit circle
    pairs = code.view(8, 2, 5, 7)
    torch.testing.assert_close(pairs.pow(2).sum(dim=1), torch.ones(8, 5, 7))
    # the first y pair is sin/cos of the normalised row position
    y = (torch.arange(5) + 0.5) / 5 * 2 * math.pi
    torch.testing.assert_close(code[0, :, 0], y.sin().float())
    with pytest.raises(ValueError, match="multiple of 4"):
        sine_positional_encoding(6, 2, 2)


def test_expand_index_to_children():
    # coarse grid 2x3, two frames; index 4 = frame 0, (y=1, x=1); index 6 = frame 1, (0, 0)
    index = torch.tensor([[4, 6]])
    fine = expand_index(index, (2, 3), factor=2)
    # fine grid 4x6: (2,2) (2,3) (3,2) (3,3) of frame 0, then (0,0) (0,1) (1,0) (1,1) of frame 1
    assert fine.tolist() == [[14, 15, 20, 21, 24, 25, 30, 31]]
    # every child maps back to its parent
    coarse = torch.arange(12).view(1, 12)
    children = expand_index(coarse, (2, 3), factor=4).view(12, 16)
    frame = children // (8 * 12)
    y, x = (children % 96) // 12, (children % 96) % 12
    parent = frame * 6 + (y // 4) * 3 + x // 4
    assert torch.equal(parent, torch.arange(12).view(12, 1).expand(12, 16))
