"""Clip sampling modes: LCM's `anywhere` (no temporal limit, shuffled), LMRC's `window` (distinct
frames within a span) and static-image clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vos.data.affine import affine_flow, random_affine
from vos.data.clips import ClipDataset
from vos.data.synthetic import SyntheticSource
from vos.ops import warp_backward


def _dataset(source, **overrides) -> ClipDataset:
    settings = dict(
        length=16,
        seed=0,
        num_frames=3,
        crop=None,
        flip_prob=0.0,
        color_jitter=0.0,
        frame_brightness_jitter=0.0,
    )
    settings.update(overrides)
    return ClipDataset(source, **settings)


@pytest.fixture(scope="module")
def source() -> SyntheticSource:
    return SyntheticSource("train", 3, 20, seed=2, height=64, width=96)


def _frame_ids(item, source):
    """Which frames of which video the clip holds (frames are unjittered)."""
    found = []
    for frame in item["frames"]:
        for video in source.videos():
            for t in range(20):
                if np.allclose(source.read_frame(video, t).transpose(2, 0, 1) / 255, frame):
                    found.append((video, t))
    return found


def test_anywhere_draws_distinct_frames_in_any_order_with_objects_in_all(source):
    dataset = _dataset(source, sampling="anywhere", objects_in_all_frames=True)
    orders = set()
    for index in range(6):
        item = dataset[index]
        ids = [t for _, t in _frame_ids(item, source)]
        assert len(set(ids)) == 3
        orders.add(tuple(np.argsort(ids)))
        labels = item["labels"]
        for o in np.flatnonzero(item["present"].numpy()):
            assert all((labels[t] == o + 1).any() for t in range(3))
    assert len(orders) > 1  # not always in time order


def test_window_draws_distinct_ordered_frames_within_the_span(source):
    dataset = _dataset(source, sampling="window", window=10, length=8)
    directions = set()
    for index in range(8):
        found = _frame_ids(dataset[index], source)
        assert len({video for video, _ in found}) == 1
        ids = [t for _, t in found]
        assert len(set(ids)) == 3
        assert max(ids) - min(ids) <= 9  # three frames within 10
        assert ids in (sorted(ids), sorted(ids, reverse=True))
        directions.add(ids == sorted(ids))
    assert directions == {True, False}  # reversed with reverse_prob


def test_window_must_hold_the_clip(source):
    with pytest.raises(ValueError, match="window=2"):
        _dataset(source, sampling="window", window=2)


def test_static_clips_are_affine_copies_with_exact_flow(source):
    dataset = _dataset(source, sampling="static", with_flow=True, length=4)
    for index in range(4):
        item = dataset[index]
        assert _frame_ids(item, source)[:1]  # copy 0 is a frame of the split, unwarped
        for t in (1, 2):
            warped, valid = warp_backward(item["frames"][t - 1][None], item["flow"][t][None])
            inside = valid[0, 0] > 0.99
            error = (warped[0] - item["frames"][t]).abs().mean(0)[inside].mean()
            unwarped = (item["frames"][t - 1] - item["frames"][t]).abs().mean(0)[inside].mean()
            assert error < 0.5 * unwarped


def test_affine_flow_maps_points_between_copies():
    rng = np.random.default_rng(0)
    a, b = random_affine(rng, 40, 60), random_affine(rng, 40, 60)
    flow = affine_flow(a, b, 40, 60)
    y, x = 10, 20
    source_point = np.linalg.inv(a) @ np.array([x, y, 1.0])
    expected = (b @ source_point)[:2] - np.array([x, y])
    assert np.allclose(flow[:, y, x], expected, atol=1e-4)
    assert np.allclose(affine_flow(a, a, 40, 60), 0, atol=1e-4)


def test_unknown_sampling_is_named(source):
    with pytest.raises(ValueError, match="data.clip.sampling"):
        _dataset(source, sampling="random")


def test_static_clip_labels_follow_the_warp(source):
    item = _dataset(source, sampling="static", length=2)[1]
    counts = [(item["labels"][t] == 1).sum().item() for t in range(3)]
    assert counts[0] > 0 and all(c > 0 for c in counts[1:])  # the object survives small warps
    assert torch.is_tensor(item["frames"])
