"""The realistic preset of the generated data: deforming and articulated objects, photo
textures, camera zoom, camera effects, look-alikes that cross their target — with masks,
flow and factors as exact as the simple preset's (conf/dataset/scene/realistic.yaml)."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.helpers import compose_config
from vos.data.palette import read_frame, read_mask
from vos.data.source import DatasetError
from vos.data.sources.davis import DavisLayout
from vos.data.synthetic import SyntheticScene, SyntheticSource
from vos.data.synthetic.deformation import organic_outline
from vos.data.synthetic.photos import BACKGROUND_PHOTOS, OBJECT_PHOTOS
from vos.data.synthetic.source import dataset_config_defaults

REALISTIC = dataset_config_defaults("realistic")["scene"]
# the geometry of the realistic preset without the camera's effects on the pixels, so that
# frames can be compared through the flow
SHARP = {**REALISTIC, "lighting": 0.0, "motion_blur": 0.0, "noise": 0.0, "jpeg_quality": 0}
CAMERA_EFFECTS = ("lighting", "motion_blur", "noise", "jpeg_quality")


@pytest.fixture(scope="module")
def sharp_split() -> SyntheticSource:
    return SyntheticSource("val", 8, 30, seed=0, scene=SHARP)


def _boundaries(surface: np.ndarray, radius: int = 2) -> np.ndarray:
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(surface, kernel) != cv2.erode(surface, kernel)


def test_realistic_draws_leave_the_simple_videos_as_they_were() -> None:
    """The realistic look draws from its own stream: textures and camera effects on, the
    objects, their paths, masks and factors of a seed are the simple preset's."""
    knobs = {"textures": "photos", "lighting": 0.3, "noise": 4.0, "jpeg_quality": 60}
    for seed in (1, 2, 5):
        simple, photos = (
            SyntheticScene(seed, num_frames=30),
            SyntheticScene(seed, num_frames=30, **knobs),
        )
        assert photos.factors == simple.factors and photos.first_frames == simple.first_frames
        for t in (0, 13, 29):
            assert np.array_equal(photos.mask(t), simple.mask(t))
            assert np.array_equal(photos.flow(t), simple.flow(t))
        assert not np.array_equal(photos.frame(13), simple.frame(13))


@pytest.mark.parametrize("seed", range(12))
def test_deformation_is_one_to_one_and_inverted_inside_the_outline(seed: int) -> None:
    time = np.arange(30.0)
    outline, deformation = organic_outline(
        np.random.default_rng(seed), time, articulated=seed % 3 != 0, swing=0.3, wobble=0.1
    )
    assert np.linalg.norm(outline, axis=1).max() == pytest.approx(1.0)
    canvas = np.zeros((240, 240), np.uint8)
    cv2.fillPoly(canvas, [np.round((outline + 1.2) * 100).astype(np.int32).reshape(-1, 1, 2)], 1)
    canvas = cv2.dilate(canvas, np.ones((9, 9), np.uint8))  # and a margin around it
    rows, cols = np.nonzero(canvas)
    points = np.stack([cols, rows], axis=1) / 100.0 - 1.2
    if deformation.limbs:
        assert np.ptp(np.stack([limb.swing for limb in deformation.limbs])) > 0.1  # they swing
    for t in range(0, 30, 4):
        moved = deformation.forward(points, t)
        assert np.abs(deformation.inverse(moved, t) - points).max() < 1e-6
        step = 1e-5
        d_x = (deformation.forward(points + [step, 0.0], t) - moved) / step
        d_y = (deformation.forward(points + [0.0, step], t) - moved) / step
        determinant = d_x[:, 0] * d_y[:, 1] - d_y[:, 0] * d_x[:, 1]
        assert determinant.min() > 0.3  # no fold, no collapse


def test_objects_deform_over_time(sharp_split: SyntheticSource) -> None:
    """Organic outlines change shape, not only pose: the deformed outline's area and its
    distances to the centre vary over time."""
    changes = []
    for video in sharp_split.videos():
        for layer in sharp_split.scene(video)._plan.layers:
            assert layer.shape in ("contour", "articulated") and layer.deformation is not None
            shapes = np.stack([layer.deformation.forward(layer.polygon, t) for t in range(30)])
            changes.append(np.abs(shapes - shapes[0]).max())
    assert np.median(changes) > 0.05


@pytest.mark.parametrize("step", [1, 6])
def test_flow_carries_each_target_pixel_into_its_own_silhouette(
    sharp_split: SyntheticSource, step: int
) -> None:
    """The flow from t to t-step takes every pixel of a target (but its outline) to a pixel of
    the same target's full silhouette at t-step, hidden parts included, wherever that lands in
    frame. (A flow that moved limbs and wobbles rigidly misses on 0.2-0.5% of them.)"""
    hits, total = 0, 0
    for video in sharp_split.videos()[:5]:
        scene, info = sharp_split.scene(video), sharp_split.info(video)
        ys, xs = np.mgrid[0 : scene.height, 0 : scene.width]
        for t in range(step, scene.num_frames, 3):
            flow = scene.flow(t, t - step)
            mask = scene.mask(t)
            interior = ~_boundaries(mask, radius=1)
            for object_id, first in info.first_frames.items():
                if first > t - step:  # a late object does not exist yet at t - step
                    continue
                selected = (mask == object_id) & interior
                target_x = np.round(xs + flow[0]).astype(int)[selected]
                target_y = np.round(ys + flow[1]).astype(int)[selected]
                inside = (target_x >= 0) & (target_x < scene.width)
                inside &= (target_y >= 0) & (target_y < scene.height)
                before = scene.amodal_mask(t - step, object_id)
                hits += int(before[target_y[inside], target_x[inside]].sum())
                total += int(inside.sum())
    assert total > 20000 and hits / total > 0.9995, hits / max(total, 1)


def test_flow_warps_reference_frame_onto_frame(sharp_split: SyntheticSource) -> None:
    """Photo textures, deformation and zoom included, sampling frame t-1 at p + flow(p)
    reproduces frame t where the same surface is seen at both ends."""
    errors = {"objects": [], "background": []}
    still = {"objects": [], "background": []}
    for video in sharp_split.videos()[:4]:
        scene = sharp_split.scene(video)
        ys, xs = np.mgrid[0 : scene.height, 0 : scene.width].astype(np.float32)
        for t in range(1, scene.num_frames, 3):
            previous, current = (
                scene.frame(t - 1).astype(np.float32),
                scene.frame(t).astype(np.float32),
            )
            flow = scene.flow(t)
            map_x, map_y = xs + flow[0], ys + flow[1]
            warped = cv2.remap(previous, map_x, map_y, cv2.INTER_LINEAR)
            source_x = np.clip(np.round(map_x).astype(int), 0, scene.width - 1)
            source_y = np.clip(np.round(map_y).astype(int), 0, scene.height - 1)
            now, before = scene.surfaces(t), scene.surfaces(t - 1)
            inside = (map_x >= 0) & (map_x <= scene.width - 1) & (map_y >= 0)
            inside &= map_y <= scene.height - 1
            valid = inside & (before[source_y, source_x] == now) & ~_boundaries(now)
            valid &= ~_boundaries(before)[source_y, source_x]
            for kind, region in (("objects", now > 0), ("background", now == 0)):
                selected = valid & region
                if selected.sum() >= 50:
                    errors[kind].append(np.abs(warped - current)[selected].mean())
                    still[kind].append(np.abs(previous - current)[selected].mean())
    for kind in errors:
        # photos are sharper than the simple textures: interpolation leaves a few levels
        assert np.mean(errors[kind]) < 6.0, (kind, np.mean(errors[kind]))
        assert np.mean(errors[kind]) < 0.4 * np.mean(still[kind]), kind


def test_zoom_scales_the_scene_about_the_frame_centre() -> None:
    scene = SyntheticScene(4, num_frames=30, **{**SHARP, "zoom": 0.4, "pan_speed": 0.0})
    zoom = scene._plan.zoom
    assert zoom is not None and np.ptp(zoom) > 0.05
    # with no pan the background flow is a pure scaling about the centre: it grows with the
    # distance from the centre, in proportion to the zoom change
    flow = scene.flow(29, 0)
    background = scene.surfaces(29) == 0
    ys, xs = np.mgrid[0 : scene.height, 0 : scene.width]
    centre = np.array([(scene.width - 1) / 2, (scene.height - 1) / 2])
    expected = (zoom[0] / zoom[29] - 1.0) * np.stack([xs - centre[0], ys - centre[1]])
    assert np.abs(flow - expected)[:, background].max() < 1e-3


def test_motion_blur_smears_only_what_moves() -> None:
    """Blur samples each pixel along its own flow: with a still camera the background is as
    sharp as without blur, moving objects are not."""
    knobs = {**SHARP, "pan_speed": 0.0, "zoom": 0.0}
    sharp = SyntheticScene(6, num_frames=30, **knobs)
    blurred = SyntheticScene(6, num_frames=30, **{**knobs, "motion_blur": 1.0})
    for t in (5, 17):
        flow = blurred.flow(t)
        still = np.hypot(flow[0], flow[1]) == 0
        difference = np.abs(blurred.frame(t).astype(int) - sharp.frame(t).astype(int)).sum(-1)
        assert not difference[still].any()
        assert difference[~still].mean() > 3.0


def test_camera_effects_are_deterministic_per_frame() -> None:
    """Noise, light and compression of frame t do not depend on what was read before."""
    first = SyntheticScene(9, num_frames=12, **REALISTIC)
    sequence = [first.frame(t) for t in range(12)]
    again = SyntheticScene(9, num_frames=12, **REALISTIC)
    for t in (11, 3, 7):
        assert np.array_equal(again.frame(t), sequence[t])
    sharp = SyntheticScene(9, num_frames=12, **SHARP)
    assert np.array_equal(sharp.mask(7), first.mask(7))  # masks are the sharp scene's
    # the light changes over the video: frame brightness relative to the sharp frames varies
    ratios = [first.frame(t).mean() / sharp.frame(t).mean() for t in range(12)]
    assert np.ptp(ratios) > 0.02


def test_targets_and_background_are_different_photos_and_lookalikes_share_theirs(
    sharp_split: SyntheticSource,
) -> None:
    for video in sharp_split.videos():
        scene = sharp_split.scene(video)
        layers = scene._plan.layers
        targets = [layer for layer in layers if layer.is_target]
        assert all(layer.texture == "photo" and layer.photo in OBJECT_PHOTOS for layer in targets)
        assert len({layer.photo for layer in targets}) == len(targets)
        background = scene._painter.background.photo
        assert background in BACKGROUND_PHOTOS and background not in {t.photo for t in targets}
        for layer in layers:
            if not layer.is_target:
                model = layers[layer.model]
                assert layer.photo == model.photo and layer.shape == model.shape


def test_lookalikes_cross_in_front_of_their_target() -> None:
    """With distractor_crossing, a staged occlusion sends a look-alike over the target it
    imitates: the look-alike hides part of that very target."""
    source = SyntheticSource("val", 16, 30, seed=2, scene=SHARP)
    crossings = staged = 0
    for index, video in enumerate(source.videos()):
        wished = source.staged_factors(index)
        scene = source.scene(video)
        layers = scene._plan.layers
        if not (wished["occlusion"] and any(not layer.is_target for layer in layers)):
            continue
        staged += 1
        for object_id, layer_index in scene._layer_of_id.items():
            lookalikes = {i + 1 for i, layer in enumerate(layers) if layer.model == layer_index}
            for t in range(scene.num_frames):
                amodal = scene.amodal_mask(t, object_id)
                covered = np.isin(scene.surfaces(t)[amodal], list(lookalikes)).sum()
                if amodal.sum() >= 20 and covered >= 0.1 * amodal.sum():
                    crossings += 1
                    break
    assert staged >= 4 and crossings >= 0.7 * staged, (crossings, staged)


def test_realistic_knobs_are_checked() -> None:
    for knobs, key in (
        ({"shapes": "cubes"}, "shapes"),
        ({"textures": "paint"}, "textures"),
        ({"limb_swing": 0.6}, "limb_swing"),
        ({"wobble": 0.3}, "wobble"),
        ({"zoom": -0.1}, "zoom"),
        ({"jpeg_quality": 101}, "jpeg_quality"),
        ({"articulated_prob": 1.5}, "articulated_prob"),
    ):
        with pytest.raises(ValueError, match=key):
            SyntheticScene(0, num_frames=4, **knobs)
    with pytest.raises(DatasetError, match="unknown scene preset 'real'"):
        dataset_config_defaults("real")


def test_scene_preset_is_a_config_group_and_renders_up_to_480p() -> None:
    cfg = compose_config(
        "train", ["dataset/scene=realistic", "dataset.height=480", "dataset.width=864"]
    )
    assert cfg.dataset.scene.textures == "photos" and cfg.dataset.scene.shapes == "organic"
    from hydra.utils import instantiate

    source = instantiate(cfg.dataset.eval)
    video = source.videos()[0]
    frame, mask = source.read_frame(video, 5), source.read_mask(video, 5)
    assert frame.shape == (480, 864, 3) and mask.shape == (480, 864)
    assert set(np.unique(mask)) <= {0, *source.info(video).first_frames}
    assert compose_config("train").dataset.scene.get("textures") is None  # simple by default


def test_a_source_takes_a_preset_by_name() -> None:
    """scene: realistic (e.g. in a dataset.extra_eval entry) is the preset's knobs."""
    named = SyntheticSource("val", 2, 30, seed=3, height=64, width=112, scene="realistic")
    spelled = SyntheticSource("val", 2, 30, seed=3, height=64, width=112, scene=REALISTIC)
    assert named.knobs == spelled.knobs and named.knobs["textures"] == "photos"
    assert np.array_equal(
        named.read_frame("syn_val_0001", 4), spelled.read_frame("syn_val_0001", 4)
    )
    with pytest.raises(DatasetError, match="unknown scene preset 'photoreal'"):
        SyntheticSource("val", 2, 30, scene="photoreal")


def test_cli_exports_the_realistic_preset(tmp_path) -> None:
    out = tmp_path / "syn"
    command = [sys.executable, "-m", "vos.data.synthetic", "--out", str(out), "--videos", "1"]
    command += ["--frames", "30", "--height", "64", "--width", "112", "--scene", "realistic"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "realistic scene" in result.stdout
    layout = DavisLayout(out)
    source = SyntheticSource("val", 1, 30, seed=0, height=64, width=112, scene=REALISTIC)
    for t in (0, 29):
        name = f"{t:05d}"
        assert np.array_equal(
            read_mask(layout.mask_path("syn_val_0000", name)), source.read_mask("syn_val_0000", t)
        )
        jpeg = read_frame(layout.frame_path("syn_val_0000", name)).astype(np.float32)
        assert np.abs(jpeg - source.read_frame("syn_val_0000", t)).mean() < 8.0


def test_flow_of_a_deformed_object_is_its_own_inverse_whether_painted_first_or_not() -> None:
    """A frame's pixels and its flow share each deformed layer's inverse (computed once per
    frame): the flow is D_ref(D_t^-1(p)) of each visible pixel p, the same whether the frame
    was painted before it or not, and the frame is the same either way."""
    painted_first = SyntheticScene(4, num_frames=12, **SHARP)
    flow_first = SyntheticScene(4, num_frames=12, **SHARP)
    plan = painted_first._plan
    deformed = [i for i, layer in enumerate(plan.layers) if layer.deformation is not None]
    assert deformed
    checked = 0
    for t in (3, 7, 11):
        frame = painted_first.frame(t)
        flow = painted_first.flow(t, t - 3)
        assert np.array_equal(flow_first.flow(t, t - 3), flow)
        assert np.array_equal(flow_first.frame(t), frame)
        surface = painted_first.surfaces(t)
        for index in deformed:
            rows, cols = np.nonzero(surface == index + 1)
            if not len(rows):
                continue
            layer = plan.layers[index]
            points = np.stack([cols, rows], axis=1).astype(np.float64)
            expected = layer.to_frame(layer.to_unit(points, t), t - 3) - points
            assert np.abs(flow[:, rows, cols].T - expected).max() < 1e-4
            checked += len(rows)
    assert checked > 1000


def test_a_scene_rebuilt_by_its_source_is_not_measured_again(monkeypatch) -> None:
    """The source keeps each video's measurement: a scene that left its cache comes back
    the same (masks, frames, ids and factors) without rasterising every frame again."""
    import vos.data.synthetic.scene as scene_module

    calls = []
    measure = scene_module.measure
    monkeypatch.setattr(scene_module, "measure", lambda *a: calls.append(1) or measure(*a))
    source = SyntheticSource("train", 3, 12, seed=0, cache_size=1, scene=REALISTIC)
    calls.clear()  # the source builds one scene up front to check its knobs
    first = {v: (source.read_frame(v, 5), source.read_mask(v, 5)) for v in source.videos()}
    assert len(calls) == 3
    for index, video in reversed(list(enumerate(source.videos()))):
        rebuilt = source.scene(video)  # the cache holds one scene: each video is rebuilt
        staged = source.staged_factors(index)
        fresh = SyntheticScene(rebuilt.seed, num_frames=12, staged=staged, **REALISTIC)
        assert rebuilt.first_frames == fresh.first_frames and rebuilt.factors == fresh.factors
        assert np.array_equal(source.read_mask(video, 5), first[video][1])
        assert np.array_equal(source.read_frame(video, 5), first[video][0])
        assert np.array_equal(fresh.mask(5), first[video][1])
    assert len(calls) == 3 + 3  # the three fresh scenes above; no rebuild measured
    other = source.scene(source.videos()[0]).measurement
    with pytest.raises(ValueError, match="measurement: of a scene of 12 frames"):
        SyntheticScene(0, num_frames=20, measurement=other, **REALISTIC)
