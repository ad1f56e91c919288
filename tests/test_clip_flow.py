"""Flow between the frames a training clip actually pairs (skips, reversed clips)."""

from __future__ import annotations

import numpy as np
import pytest

from vos.data.clips import ClipDataset
from vos.data.source import VideoInfo, VideoSource, sample_bilinear
from vos.data.synthetic import SyntheticSource

SIZE = 6
FRAMES = 12


class _CountingSource(VideoSource):
    """Frame t is filled with the value t; its backward flow is the constant (t, 1); every
    frame shows object 1 so any clip is valid. Only backward flow: the default chaining."""

    def videos(self) -> list[str]:
        return ["v"]

    def info(self, video: str) -> VideoInfo:
        names = [f"{t:05d}" for t in range(FRAMES)]
        return VideoInfo(video, names, SIZE, SIZE, {1: 0}, list(range(FRAMES)))

    def read_frame(self, video, index):
        return np.full((SIZE, SIZE, 3), index, dtype=np.uint8)

    def read_mask(self, video, index):
        mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
        mask[1:4, 1:4] = 1
        return mask

    def read_flow(self, video, index):
        flow = np.zeros((2, SIZE, SIZE), dtype=np.float32)
        if index > 0:
            flow[0], flow[1] = index, 1
        return flow


def test_default_flow_between_chains_backward_flows() -> None:
    source = _CountingSource()
    chained = source.read_flow_between("v", 5, 2)
    # constant fields compose by addition: (5 + 4 + 3, 1 + 1 + 1)
    assert np.allclose(chained[0], 12) and np.allclose(chained[1], 3)
    assert np.array_equal(source.read_flow_between("v", 5, 4), source.read_flow("v", 5))
    assert not source.read_flow_between("v", 5, 5).any()
    assert source.read_flow_between("v", 2, 5) is None  # forward flow is unknown


def test_sample_bilinear_interpolates_and_clamps() -> None:
    field = np.arange(12, dtype=np.float32).reshape(1, 3, 4)  # value = 4 y + x
    displacement = np.zeros((2, 3, 4), dtype=np.float32)
    displacement[0] = 0.5
    displacement[1] = 0.25
    sampled = sample_bilinear(field, displacement)
    ys, xs = np.mgrid[0:3, 0:4].astype(np.float32)
    expected = 4 * np.clip(ys + 0.25, 0, 2) + np.clip(xs + 0.5, 0, 3)
    assert np.allclose(sampled[0], expected)


def test_chained_flow_is_close_to_the_exact_synthetic_flow() -> None:
    source = SyntheticSource("train", 2, 20, seed=3)
    for video in source.videos():
        exact = source.read_flow_between(video, 12, 8)
        chained = VideoSource.read_flow_between(source, video, 12, 8)
        # they differ only where a pixel's surface changes along the chain (occlusion edges)
        assert np.abs(exact - chained).mean() < 0.1 * max(np.abs(exact).mean(), 1e-3)
        assert np.array_equal(source.read_flow_between(video, 12, 11), source.read_flow(video, 12))


def _clip_dataset(source: VideoSource, **overrides) -> ClipDataset:
    settings = dict(
        length=64,
        seed=0,
        num_frames=3,
        max_skip_values=[4],
        max_skip_milestones=[0.0],
        reverse_prob=0.5,
        crop=None,
        flip_prob=0.0,
        color_jitter=0.0,
        frame_brightness_jitter=0.0,
        with_flow=True,
    )
    settings.update(overrides)
    return ClipDataset(source, **settings)


def _frame_ids(item: dict) -> list[int]:
    return [round(float(frame.mean()) * 255) for frame in item["frames"]]


def test_clip_flow_pairs_each_frame_with_the_clip_frame_before_it() -> None:
    source = _CountingSource()
    dataset = _clip_dataset(source)
    skipped = 0
    for index in range(len(dataset)):
        item = dataset[index]
        ids = _frame_ids(item)
        # a backward-only source: reversed clips are put back in time order
        assert ids == sorted(ids)
        assert not item["flow"][0].any()
        for t in range(1, len(ids)):
            expected = source.read_flow_between("v", ids[t], ids[t - 1])
            assert np.allclose(item["flow"][t].numpy(), expected)
            skipped += ids[t] - ids[t - 1] > 1
    assert skipped > 0  # the check covered skips, where t -> t-1 flow would be wrong


def test_synthetic_clips_keep_reversed_order_with_exact_flow() -> None:
    source = SyntheticSource("train", 3, 20, seed=1)
    dataset = _clip_dataset(source, length=12, reverse_prob=1.0, color_jitter=0.0)
    item = dataset[0]
    frames = item["frames"].numpy()
    video_frames = {
        video: [source.read_frame(video, t).astype(np.float32) / 255 for t in range(20)]
        for video in source.videos()
    }
    # find the clip's frames in the videos: reversed, so strictly descending
    matches = [
        (video, t)
        for frame in frames
        for video, frames_of in video_frames.items()
        for t, candidate in enumerate(frames_of)
        if np.allclose(candidate.transpose(2, 0, 1), frame)
    ]
    assert len(matches) == 3 and len({video for video, _ in matches}) == 1
    video = matches[0][0]
    ids = [t for _, t in matches]
    assert ids == sorted(ids, reverse=True) or len(set(ids)) < 3
    for t in range(1, 3):
        expected = source.read_flow_between(video, ids[t], ids[t - 1])
        assert np.allclose(item["flow"][t].numpy(), expected)


@pytest.mark.parametrize("reverse_prob", [0.0, 1.0])
def test_clip_without_flow_has_no_flow_key(reverse_prob: float) -> None:
    item = _clip_dataset(_CountingSource(), with_flow=False, reverse_prob=reverse_prob)[0]
    assert "flow" not in item
