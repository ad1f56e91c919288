"""The procedural dataset: determinism, exact flow, honest masks and factors, DAVIS export."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from vos.data.palette import read_frame, read_mask
from vos.data.source import DatasetError
from vos.data.sources.davis import DavisLayout
from vos.data.synthetic import (
    FACTOR_NAMES,
    SyntheticScene,
    SyntheticSource,
    export_davis,
    flow_path,
    video_seed,
)
from vos.data.synthetic.source import dataset_config_defaults

SMALL = {"height": 64, "width": 96}


@pytest.fixture(scope="module")
def val_split() -> SyntheticSource:
    """Twelve default-size val videos of 30 frames, shared by the slower checks."""
    return SyntheticSource("val", 12, 30, seed=0)


@pytest.fixture(scope="module", params=["simple", "realistic"])
def preset_split(request) -> SyntheticSource:
    """Twelve default-size val videos of 30 frames of each scene preset
    (conf/dataset/scene/*.yaml)."""
    return SyntheticSource(
        "val", 12, 30, seed=0, scene=dataset_config_defaults(request.param)["scene"]
    )


def _all_masks(scene: SyntheticScene) -> np.ndarray:
    return np.stack([scene.mask(t) for t in range(scene.num_frames)])


def _boundaries(surface: np.ndarray, radius: int = 2) -> np.ndarray:
    """Pixels within ``radius`` of a change of visible surface."""
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(surface, kernel) != cv2.erode(surface, kernel)


# -- determinism and seeds -------------------------------------------------------------------


def test_same_seed_same_video_and_different_seeds_differ() -> None:
    first, again = SyntheticScene(7, num_frames=12), SyntheticScene(7, num_frames=12)
    other = SyntheticScene(8, num_frames=12)
    assert first.first_frames == again.first_frames and first.factors == again.factors
    for t in (0, 5, 11):
        assert np.array_equal(first.frame(t), again.frame(t))
        assert np.array_equal(first.mask(t), again.mask(t))
        assert np.array_equal(first.flow(t), again.flow(t))
    assert not np.array_equal(first.frame(0), other.frame(0))


def test_frame_rendered_alone_equals_frame_rendered_in_sequence() -> None:
    sequential = SyntheticScene(3, num_frames=20)
    rendered = [(sequential.frame(t), sequential.mask(t), sequential.flow(t)) for t in range(20)]
    for t in (13, 0, 19, 7):
        alone = SyntheticScene(3, num_frames=20)
        assert np.array_equal(alone.frame(t), rendered[t][0])
        assert np.array_equal(alone.mask(t), rendered[t][1])
        assert np.array_equal(alone.flow(t), rendered[t][2])


def test_frame_is_a_copy_of_the_cache() -> None:
    scene = SyntheticScene(5, num_frames=4)
    scene.frame(1)[:] = 0
    assert scene.frame(1).any()


def test_train_and_val_never_share_a_video() -> None:
    for seed in (0, 1, 12345):
        train = {video_seed(seed, "train", index) for index in range(200)}
        val = {video_seed(seed, "val", index) for index in range(200)}
        assert len(train) == len(val) == 200 and not train & val
    train_split = SyntheticSource("train", 3, 30, seed=0, **SMALL)
    val_split = SyntheticSource("val", 3, 30, seed=0, **SMALL)
    for index in range(3):
        assert not np.array_equal(
            train_split.read_frame(f"syn_train_{index:04d}", 0),
            val_split.read_frame(f"syn_val_{index:04d}", 0),
        )


# -- flow ---------------------------------------------------------------------------------------


def test_flow_of_first_frame_is_zero() -> None:
    flow = SyntheticScene(0, num_frames=5).flow(0)
    assert flow.shape == (2, 128, 224) and flow.dtype == np.float32 and not flow.any()


@pytest.mark.parametrize("step", [1, 3, -2])
def test_flow_warps_reference_frame_onto_frame(val_split: SyntheticSource, step: int) -> None:
    """Bilinear sampling of frame t-step at p + flow(t, t-step)(p) reproduces frame t wherever
    the same surface is seen at both ends, away from surface boundaries and inside the frame;
    step 1 is the default backward flow, -2 a flow forward in time."""
    for video in val_split.videos()[:4]:
        scene = val_split.scene(video)
        height, width = scene.height, scene.width
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        errors = {"objects": [], "background": []}
        still = {"objects": [], "background": []}
        for t in range(max(step, 0) + 1, scene.num_frames - max(-step, 0), 2):
            previous = scene.frame(t - step).astype(np.float32)
            current = scene.frame(t).astype(np.float32)
            flow = scene.flow(t) if step == 1 else scene.flow(t, t - step)
            map_x, map_y = xs + flow[0], ys + flow[1]
            warped = cv2.remap(previous, map_x, map_y, cv2.INTER_LINEAR)
            source_x = np.clip(np.round(map_x).astype(int), 0, width - 1)
            source_y = np.clip(np.round(map_y).astype(int), 0, height - 1)
            surface_now, surface_before = scene.surfaces(t), scene.surfaces(t - step)
            inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
            same_surface = surface_before[source_y, source_x] == surface_now
            # most pixels keep their surface: occlusion changes are the exception
            assert same_surface[inside].mean() > 1.0 - 0.05 * abs(step)
            valid = (
                inside
                & same_surface
                & ~_boundaries(surface_now)
                & ~_boundaries(surface_before)[source_y, source_x]
            )
            for kind, region in (("objects", surface_now > 0), ("background", surface_now == 0)):
                selected = valid & region
                if selected.sum() >= 50:
                    errors[kind].append(np.abs(warped - current)[selected].mean())
                    still[kind].append(np.abs(previous - current)[selected].mean())
        # interpolation of sharp textures (twice bilinear) is all that is left: a few levels
        assert np.mean(errors["background"]) < 2.5
        assert np.mean(errors["objects"]) < 5.0
        assert np.mean(errors["objects"]) < 0.5 * np.mean(still["objects"])
        assert np.mean(errors["background"]) < np.mean(still["background"])


# -- masks, ids and factors ---------------------------------------------------------------------


def test_masks_hold_only_visible_objects_and_first_frames_are_right(
    preset_split: SyntheticSource,
) -> None:
    for video in preset_split.videos():
        scene, info = preset_split.scene(video), preset_split.info(video)
        masks = _all_masks(scene)
        assert masks.dtype == np.uint8 and masks.shape == (30, 128, 224)
        ids = sorted(info.first_frames)
        assert ids == list(range(1, len(ids) + 1)) and 1 <= len(ids) <= 4
        assert set(np.unique(masks)) <= {0, *ids}
        assert min(info.first_frames.values()) == 0  # frame 0 always holds a target
        for object_id, first in info.first_frames.items():
            present = (masks == object_id).any(axis=(1, 2))
            assert not present[:first].any() and present[first]
        for t in (0, 15, 29):  # distractors and background are 0; targets are what is on top
            surfaces = scene.surfaces(t)
            assert not masks[t][surfaces == 0].any()
            for object_id in ids:
                amodal = scene.amodal_mask(t, object_id)
                assert not (masks[t] == object_id)[~amodal].any()


def test_each_factor_happens_in_the_split(preset_split: SyntheticSource) -> None:
    infos = [preset_split.info(video) for video in preset_split.videos()]
    for info in infos:
        assert set(info.factors) == set(FACTOR_NAMES)
        assert all(isinstance(value, bool) for value in info.factors.values())
    for name in FACTOR_NAMES:
        share = sum(info.factors[name] for info in infos) / len(infos)
        assert 0.2 <= share <= 0.7, (name, share)


def test_factors_match_the_masks(preset_split: SyntheticSource) -> None:
    for video in preset_split.videos():
        scene, info = preset_split.scene(video), preset_split.info(video)
        factors = info.factors
        masks = _all_masks(scene)
        ids = sorted(info.first_frames)
        areas = np.stack([(masks == i).sum(axis=(1, 2)) for i in ids], axis=1)  # [T, O]
        peaks = areas.max(axis=0)

        assert factors["late_objects"] == any(first > 0 for first in info.first_frames.values())

        # leaves_frame: an object's area drops to ~0 and comes back
        drops_and_returns = False
        for k, object_id in enumerate(ids):
            for t in range(info.first_frames[object_id] + 1, scene.num_frames - 1):
                # well seen on both sides (objects change size: up to ~2.5x with zoom), and
                # all but gone in between
                seen = min(areas[:t, k].max(), areas[t + 1 :, k].max())
                if areas[t, k] <= 0.1 * seen and seen >= 0.4 * peaks[k]:
                    drops_and_returns = True
        if factors["leaves_frame"]:
            assert drops_and_returns, video
        elif not factors["occlusion"]:  # only an exit or an occluder can make an object vanish
            assert not drops_and_returns, video

        # occlusion: a target loses >= 10% of its in-frame silhouette to other objects
        largest_loss = 0.0
        for t in range(scene.num_frames):
            for object_id in ids:
                amodal = scene.amodal_mask(t, object_id).sum()
                if amodal >= 20:
                    hidden = amodal - (masks[t] == object_id).sum()
                    largest_loss = max(largest_loss, hidden / amodal)
        assert factors["occlusion"] == (largest_loss >= 0.1), (video, largest_loss)

        # distractors: unannotated objects are visible (they are 0 in the masks)
        unannotated = [
            np.count_nonzero((scene.surfaces(t) > 0) & (masks[t] == 0))
            for t in range(scene.num_frames)
        ]
        assert factors["distractors"] == (max(unannotated) >= 30), video

        # fast_motion: a visible target's silhouette (hidden parts included, so an occluder
        # does not move its centroid) jumps between two frames while staying in frame
        fast = 0.18 * min(scene.height, scene.width)
        largest_step = largest_uncut_step = 0.0
        for k, object_id in enumerate(ids):
            silhouettes = [scene.amodal_mask(t, object_id) for t in range(scene.num_frames)]
            sizes = np.array([silhouette.sum() for silhouette in silhouettes])
            for t in range(1, scene.num_frames):
                if min(areas[t - 1, k], areas[t, k]) == 0 or min(sizes[t - 1], sizes[t]) < 20:
                    continue
                ys0, xs0 = np.nonzero(silhouettes[t - 1])
                ys1, xs1 = np.nonzero(silhouettes[t])
                step = np.hypot(xs1.mean() - xs0.mean(), ys1.mean() - ys0.mean())
                largest_step = max(largest_step, step)
                # a frame edge cutting the silhouette moves its centroid: no evidence of speed
                if 0.8 <= sizes[t] / sizes[t - 1] <= 1.25:
                    largest_uncut_step = max(largest_uncut_step, step)
        if factors["fast_motion"]:
            assert largest_step >= 0.8 * fast, (video, largest_step)
        else:
            assert largest_uncut_step < fast, (video, largest_uncut_step)


# -- the source -----------------------------------------------------------------------------------


def test_source_info_and_reads() -> None:
    source = SyntheticSource("train", 3, 6, seed=4, **SMALL)
    assert source.videos() == ["syn_train_0000", "syn_train_0001", "syn_train_0002"]
    assert len(source) == 3
    info = source.info("syn_train_0001")
    assert info.frame_names == [f"{t:05d}" for t in range(6)]
    assert info.annotated == list(range(6)) and (info.height, info.width) == (64, 96)
    assert set(info.factors) == set(FACTOR_NAMES)
    frame = source.read_frame("syn_train_0001", 5)
    assert frame.shape == (64, 96, 3) and frame.dtype == np.uint8
    assert source.read_mask("syn_train_0001", 5).shape == (64, 96)
    flow = source.read_flow("syn_train_0001", 5)
    assert flow.shape == (2, 64, 96) and flow.dtype == np.float32
    with pytest.raises(DatasetError, match="syn_val_0000"):
        source.info("syn_val_0000")
    with pytest.raises(IndexError):
        source.read_frame("syn_train_0000", 6)


@pytest.mark.parametrize("scene", ["simple", "realistic"])
def test_frame_cache_gives_the_frames_rendering_gives(scene: str) -> None:
    """Frames and label maps read through the frame cache, in a shuffled order with repeats and
    with a budget small enough to evict, equal those of a source that renders every read; a
    caller changing what it got changes nothing cached."""
    plain = SyntheticSource("train", 3, 6, seed=4, scene=scene, cache_size=1, **SMALL)
    frame_bytes = 64 * 96 * 3
    cached = SyntheticSource(
        "train", 3, 6, seed=4, scene=scene, cache_size=1, frame_cache_mb=5 * frame_bytes / 2**20,
        **SMALL,
    )  # fmt: skip
    order = np.random.default_rng(0).integers(0, [3, 6], size=(60, 2))
    for video_index, t in order:
        video = f"syn_train_{video_index:04d}"
        frame = cached.read_frame(video, t)
        assert np.array_equal(frame, plain.read_frame(video, t)), (video, t)
        frame[:] = 0  # the caller's copy
        mask = cached.read_mask(video, t)
        assert np.array_equal(mask, plain.read_mask(video, t)), (video, t)
        mask[:] = 7
        assert cached._pixels_bytes <= cached.frame_cache_bytes
    assert 0 < len(cached._pixels) < 36  # some kept, some evicted
    kept = [key for key in cached._pixels if key[0] == "frame"]
    assert kept, "no frame left in the cache to read again"
    for _, video_index, t in kept:
        video = f"syn_train_{video_index:04d}"
        assert np.array_equal(cached.read_frame(video, t), plain.read_frame(video, t))
    with pytest.raises(DatasetError, match="frame_cache_mb must be >= 0"):
        SyntheticSource("train", 3, 6, frame_cache_mb=-1, **SMALL)


def test_val_needs_thirty_frames_and_splits_are_checked() -> None:
    with pytest.raises(ValueError, match="num_frames"):
        SyntheticSource("val", 2, 29)
    SyntheticSource("train", 2, 8, **SMALL)  # train clips may be short
    with pytest.raises(DatasetError, match="'test'"):
        SyntheticSource("test", 2, 30)
    with pytest.raises(DatasetError, match="occlusion_probability"):
        SyntheticSource("train", 2, 8, occlusion_probability=0.5)
    with pytest.raises(ValueError, match="max_objects"):
        SyntheticScene(0, max_objects=5)


def test_staging_is_spread_over_the_split() -> None:
    source = SyntheticSource("train", 40, 8, seed=2, **SMALL)
    staged = [source.staged_factors(index) for index in range(40)]
    for name in FACTOR_NAMES:
        assert 13 <= sum(flags[name] for flags in staged) <= 19, name
    none = SyntheticSource("train", 10, 8, fast_motion_prob=0.0, **SMALL)
    assert not any(none.staged_factors(index)["fast_motion"] for index in range(10))


# -- export ---------------------------------------------------------------------------------------


def test_export_writes_the_davis_layout(tmp_path) -> None:
    written = export_davis(tmp_path, videos_per_split=2, num_frames=30, seed=1, **SMALL)
    layout = DavisLayout(tmp_path)
    assert written == {
        "train": ["syn_train_0000", "syn_train_0001"],
        "val": ["syn_val_0000", "syn_val_0001"],
    }
    for split, videos in written.items():
        assert layout.image_set(split).read_text().split() == videos
    factors = json.loads((tmp_path / "factors.json").read_text())
    assert sorted(factors) == sorted(written["train"] + written["val"])
    source = SyntheticSource("val", 2, 30, seed=1, **SMALL)
    for video in written["val"]:
        assert factors[video] == source.info(video).factors
        frames = sorted(p.name for p in (layout.images_dir / video).iterdir())
        assert frames == [f"{t:05d}.jpg" for t in range(30)]
        for t in (0, 17, 29):
            name = f"{t:05d}"
            assert np.array_equal(
                read_mask(layout.mask_path(video, name)), source.read_mask(video, t)
            )
            jpeg = read_frame(layout.frame_path(video, name)).astype(np.float32)
            assert np.abs(jpeg - source.read_frame(video, t)).mean() < 6.0
            flow = np.load(flow_path(layout, video, name))
            assert flow.dtype == np.float32 and np.array_equal(flow, source.read_flow(video, t))


def test_cli_exports_a_tiny_dataset(tmp_path) -> None:
    out = tmp_path / "syn"
    command = [sys.executable, "-m", "vos.data.synthetic", "--out", str(out), "--videos", "2"]
    command += ["--frames", "30", "--seed", "3", "--height", "48", "--width", "80"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "2 train + 2 val" in result.stdout and str(out) in result.stdout
    layout = DavisLayout(out)
    assert layout.image_set("val").read_text().split() == ["syn_val_0000", "syn_val_0001"]
    mask = read_mask(layout.mask_path("syn_train_0001", "00029"))
    assert mask.shape == (48, 80)
    assert read_frame(layout.frame_path("syn_val_0001", "00000")).shape == (48, 80, 3)
