"""`SyntheticScene`: one procedural video drawn from a seed, and its public API.

Building a scene draws its objects (`cast`), their trajectories and staged factors
(`staging`) into a `ScenePlan`, then measures what the plan really shows (`factors`). Reading
it composes silhouettes (`composition`), paints them (`render`) and computes exact flow
(`flow`) for any frame on its own.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from vos.data.synthetic.camera import apply_zoom, draw_zoom
from vos.data.synthetic.cast import draw_layers, restyle
from vos.data.synthetic.composition import Composition, compose
from vos.data.synthetic.deformation import MAX_SWING
from vos.data.synthetic.factors import FACTOR_NAMES, FAST_MOTION_FRACTION, Measurement, measure
from vos.data.synthetic.flow import exact_flow
from vos.data.synthetic.layers import ScenePlan
from vos.data.synthetic.optics import Optics
from vos.data.synthetic.photos import BACKGROUND_PHOTOS
from vos.data.synthetic.render import Background, Painter
from vos.data.synthetic.staging import Pace, draw_pan, plan_motion

MAX_OBJECTS = 4
SHAPE_STYLES: tuple[str, ...] = ("geometric", "organic")
TEXTURE_STYLES: tuple[str, ...] = ("patterns", "photos")


class SyntheticScene:
    """One procedural video: everything is drawn from ``seed`` and the knobs below.

    Args:
        seed: any non-negative integer; equal seeds and knobs give identical videos.
        height, width: frame size in pixels.
        num_frames: length of the video.
        max_objects: most targets per video (1..4); each video has 1..max_objects of them.
        max_distractors: most distractors in a video that has them.
        distractor_prob: chance that a video stages distractors.
        fast_motion_prob: chance that a video stages a fast one-frame jump of a target.
        late_object_prob: chance that a video stages a target that appears after frame 0
            (needs ``max_objects >= 2``: frame 0 always has a target).
        leave_frame_prob: chance that a video stages a target leaving the frame and coming back.
        occlusion_prob: chance that a video stages an object passing over a target; otherwise
            objects are kept apart where a few re-draws allow.
        min_object_size, max_object_size: range of an object's bounding diameter as a fraction
            of the frame height (it then varies by about +-20% over time).
        motion_speed: multiplies the speed of ordinary object motion.
        pan_speed: multiplies the speed of the camera pan (0 for a static camera).
        scale_change: largest relative swing of an object's size over time.
        spin: largest spin of an object, radians per frame.
        shapes: ``geometric`` (rigid polygons, ellipses, stars...) or ``organic`` (smooth
            random outlines that deform over time, some with limbs that swing at joints).
        articulated_prob: share of organic targets that have limbs.
        limb_swing: largest turn of a limb at its joint, radians (at most 0.3).
        wobble: largest non-rigid deformation of an organic outline, unit coordinates.
        textures: ``patterns`` (procedural colours and patterns) or ``photos`` (crops of the
            photos scikit-image and scikit-learn ship; the background is a photo too).
        zoom: largest relative camera zoom in or out over the video (0: none).
        lighting: strength of the changes of light (brightness, colour, gradient; 0: none).
        motion_blur: share of the frame interval the shutter is open (0: sharp frames).
        noise: standard deviation of the sensor noise in grey levels (0: none).
        jpeg_quality: lowest JPEG quality a video is compressed at (0: not compressed).
        distractor_crossing: a staged occlusion sends a look-alike over the target it
            imitates, when the video has one.
        staged: which factors to stage, overriding the ``*_prob`` draws (used by
            `SyntheticSource` to spread the factors evenly over a split); missing keys are drawn.
        measurement: the `measurement` of an earlier scene of the same seed and knobs, to skip
            measuring again (`SyntheticSource` keeps one per video while its scenes come and go).

    The factors reported by `factors` are measured on the result, not the staging wishes. The
    defaults are the ``simple`` preset; the realistic knobs draw from their own random stream,
    so turning them on leaves the simple draws (trajectories, factors) of a seed as they were.
    """

    def __init__(
        self,
        seed: int,
        *,
        height: int = 128,
        width: int = 224,
        num_frames: int = 40,
        max_objects: int = 4,
        max_distractors: int = 2,
        distractor_prob: float = 0.4,
        fast_motion_prob: float = 0.4,
        late_object_prob: float = 0.4,
        leave_frame_prob: float = 0.4,
        occlusion_prob: float = 0.4,
        min_object_size: float = 0.16,
        max_object_size: float = 0.30,
        motion_speed: float = 1.0,
        pan_speed: float = 1.0,
        scale_change: float = 0.2,
        spin: float = 0.05,
        shapes: str = "geometric",
        articulated_prob: float = 0.5,
        limb_swing: float = 0.2,
        wobble: float = 0.0,
        textures: str = "patterns",
        zoom: float = 0.0,
        lighting: float = 0.0,
        motion_blur: float = 0.0,
        noise: float = 0.0,
        jpeg_quality: int = 0,
        distractor_crossing: bool = False,
        staged: Mapping[str, bool] | None = None,
        measurement: Measurement | None = None,
    ) -> None:
        check_knobs(
            seed=seed,
            height=height,
            width=width,
            num_frames=num_frames,
            max_objects=max_objects,
            max_distractors=max_distractors,
            probabilities={
                "distractor_prob": distractor_prob,
                "fast_motion_prob": fast_motion_prob,
                "late_object_prob": late_object_prob,
                "leave_frame_prob": leave_frame_prob,
                "occlusion_prob": occlusion_prob,
                "articulated_prob": articulated_prob,
            },
            min_object_size=min_object_size,
            max_object_size=max_object_size,
            motion_speed=motion_speed,
            pan_speed=pan_speed,
        )
        check_realism(
            shapes=shapes,
            textures=textures,
            limb_swing=limb_swing,
            amounts={
                "scale_change": scale_change,
                "spin": spin,
                "wobble": wobble,
                "zoom": zoom,
                "lighting": lighting,
                "motion_blur": motion_blur,
                "noise": noise,
            },
            jpeg_quality=jpeg_quality,
        )
        unknown = set(staged or {}) - set(FACTOR_NAMES)
        if unknown:
            raise ValueError(f"staged: unknown factors {sorted(unknown)}; known: {FACTOR_NAMES}")
        self.seed = int(seed)
        self.height = int(height)
        self.width = int(width)
        short_side = float(min(height, width))
        self.fast_motion_px = FAST_MOTION_FRACTION * short_side
        pace = Pace(
            short_side=short_side,
            speed_unit=0.012 * short_side * motion_speed,
            motion_speed=float(motion_speed),
            fast_motion_px=self.fast_motion_px,
        )
        time = np.arange(int(num_frames), dtype=np.float64)

        # Every draw below comes from this one stream, in this order: reordering them would
        # change every seed's video.
        rng = np.random.default_rng([self.seed, 0])
        probabilities = {
            "distractors": distractor_prob,
            "occlusion": occlusion_prob,
            "fast_motion": fast_motion_prob,
            "leaves_frame": leave_frame_prob,
            "late_objects": late_object_prob,
        }
        draws = {name: bool(rng.random() < probabilities[name]) for name in FACTOR_NAMES}
        self.staged: dict[str, bool] = {**draws, **{k: bool(v) for k, v in (staged or {}).items()}}
        layers = draw_layers(
            rng,
            self.staged,
            time,
            self.height,
            max_objects=max_objects,
            max_distractors=max_distractors,
            min_size=min_object_size,
            max_size=max_object_size,
            scale_change=scale_change,
            spin=spin,
        )
        # the realistic look draws from its own stream: the simple draws stay as they are
        look = np.random.default_rng([self.seed, 3])
        if shapes == "organic" or textures == "photos":
            restyle(
                look,
                layers,
                time,
                organic=shapes == "organic",
                photos=textures == "photos",
                articulated_prob=articulated_prob,
                limb_swing=limb_swing,
                wobble=wobble,
            )
        depth_order = [int(i) for i in rng.permutation(len(layers))]
        background = Background.draw(rng)
        if textures == "photos":
            used = {layer.photo for layer in layers}
            choices = [name for name in BACKGROUND_PHOTOS if name not in used]
            background = Background(background.style, background.hue, str(look.choice(choices)))
        pan = draw_pan(rng, time, short_side, pan_speed)
        self._plan = ScenePlan(
            height=self.height,
            width=self.width,
            time=time,
            layers=layers,
            depth_order=depth_order,
            pan=pan,
        )
        plan_motion(rng, self._plan, pace, self.staged, distractor_crossing)
        if zoom > 0.0:
            apply_zoom(self._plan, draw_zoom(look, time, zoom))
        self._optics = Optics.draw(
            look,
            time,
            lighting=lighting,
            motion_blur=motion_blur,
            noise=noise,
            jpeg_quality=int(jpeg_quality),
        )
        self._camera_effects = bool(lighting or motion_blur or noise or jpeg_quality)

        self._painter = Painter(self.seed, self._plan, background)
        # one frame's composition and pixels: the mask, frame and flow of a frame share them
        self._last_composition: tuple[int, Composition] | None = None
        self._last_frame: tuple[int, np.ndarray] | None = None

        # a source that rebuilds a scene it has measured before passes the measurement back:
        # rasterising all frames to measure them costs more than building the rest
        if measurement is None:
            measurement = measure(self._plan, self.fast_motion_px)
        elif measurement.visible_area.shape != (self.num_frames, len(layers)):
            raise ValueError(
                f"measurement: of a scene of {measurement.visible_area.shape[0]} frames and "
                f"{measurement.visible_area.shape[1]} layers, not of this one ({self.num_frames} "
                f"frames, {len(layers)} layers): pass the measurement of the same seed and knobs"
            )
        self.measurement = measurement
        self.first_frames: dict[int, int] = measurement.first_frames
        self.factors: dict[str, bool] = measurement.factors
        self.visible_area = measurement.visible_area  # [T, L] visible pixels per layer
        self.in_frame_area = measurement.in_frame_area  # [T, L] in-frame pixels per layer
        self._layer_of_id = measurement.layer_of_id
        self._label_of_surface = measurement.label_of_surface

    # -- public API ------------------------------------------------------------------------

    @property
    def num_frames(self) -> int:
        return self._plan.num_frames

    @property
    def num_objects(self) -> int:
        return len(self.first_frames)

    @property
    def num_layers(self) -> int:
        """Objects drawn in the scene: targets (including never visible ones) and distractors."""
        return len(self._plan.layers)

    def frame(self, t: int) -> np.ndarray:
        """RGB ``uint8 [H, W, 3]`` of frame ``t``, as the camera saw it (blur, light, noise and
        compression, where the knobs turn them on)."""
        t = self._check_frame(t)
        if self._last_frame is None or self._last_frame[0] != t:
            pixels = self._painter.paint(t, self._compose(t))
            if self._camera_effects:
                pixels = self._optics.apply(pixels, t, self.seed, self._velocity(t))
            self._last_frame = (t, pixels)
        return self._last_frame[1].copy()

    def mask(self, t: int) -> np.ndarray:
        """Label map ``uint8 [H, W]``: 0 background (distractors included), 1..O targets."""
        return self._label_of_surface[self._compose(self._check_frame(t)).surface]

    def surfaces(self, t: int) -> np.ndarray:
        """Which layer is visible at each pixel, ``uint8 [H, W]``: 0 background, 1 + layer
        index otherwise (distractors included). Useful to find occlusion boundaries."""
        return self._compose(self._check_frame(t)).surface.copy()

    def amodal_mask(self, t: int, object_id: int) -> np.ndarray:
        """Bool ``[H, W]``: the in-frame silhouette of target ``object_id`` at frame ``t``,
        hidden parts included (empty before the object exists or when it is out of frame)."""
        if object_id not in self.first_frames:
            raise KeyError(f"no object {object_id}; ids are {sorted(self.first_frames)}")
        layer_index = self._layer_of_id[object_id]
        silhouette = np.zeros((self.height, self.width), dtype=bool)
        for index, y0, x0, placed in self._compose(self._check_frame(t)).placements:
            if index == layer_index:
                silhouette[y0 : y0 + placed.shape[0], x0 : x0 + placed.shape[1]] = placed
        return silhouette

    def flow(self, t: int, reference: int | None = None) -> np.ndarray:
        """Exact flow ``float32 [2, H, W]`` (u, v) from frame ``t`` to frame ``reference``
        (default ``t - 1``, the backward flow): where the surface seen at each pixel of frame
        ``t`` is in frame ``reference``, occluded or out of frame there or not. Zeros when
        ``reference == t`` and for frame 0's default."""
        t = self._check_frame(t)
        if reference is None:
            reference = max(t - 1, 0)
        reference = self._check_frame(reference)
        return exact_flow(self._plan, self._compose(t), t, reference)

    # -- helpers ------------------------------------------------------------------------------

    def _check_frame(self, t: int) -> int:
        t = int(t)
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} out of range for a scene of {self.num_frames} frames")
        return t

    def _velocity(self, t: int) -> np.ndarray | None:
        """Where each pixel's surface was one frame before ``t`` (after, negated, at frame 0),
        for motion blur; None when the frames are sharp or the video has one frame."""
        if not self._optics.blurs or self.num_frames < 2:
            return None
        return self.flow(t) if t > 0 else -self.flow(0, 1)

    def _compose(self, t: int) -> Composition:
        if self._last_composition is None or self._last_composition[0] != t:
            self._last_composition = (t, compose(self._plan, t))
        return self._last_composition[1]


def check_realism(
    *,
    shapes: str,
    textures: str,
    limb_swing: float,
    amounts: Mapping[str, float],
    jpeg_quality: int,
) -> None:
    """Raise ValueError, naming the knob, for a realistic-preset knob out of its range."""
    if shapes not in SHAPE_STYLES:
        raise ValueError(f"shapes must be one of {SHAPE_STYLES}; got {shapes!r}")
    if textures not in TEXTURE_STYLES:
        raise ValueError(f"textures must be one of {TEXTURE_STYLES}; got {textures!r}")
    if not 0.0 <= float(limb_swing) <= MAX_SWING:
        raise ValueError(f"limb_swing must lie in [0, {MAX_SWING}] radians; got {limb_swing}")
    for key, value in amounts.items():
        if float(value) < 0.0:
            raise ValueError(f"{key} must be >= 0; got {value}")
    if float(amounts["wobble"]) > 0.1:
        raise ValueError(
            f"wobble must be at most 0.1 (beyond it outlines fold); got {amounts['wobble']}"
        )
    if not 0 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must lie in 0..100 (0: no compression); got {jpeg_quality}")


def check_knobs(
    *,
    seed: int,
    height: int,
    width: int,
    num_frames: int,
    max_objects: int,
    max_distractors: int,
    probabilities: Mapping[str, float],
    min_object_size: float,
    max_object_size: float,
    motion_speed: float,
    pan_speed: float,
) -> None:
    """Raise ValueError, naming the knob, for a knob out of its range."""
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")
    for key, value in (("height", height), ("width", width)):
        if int(value) < 16:
            raise ValueError(f"{key} must be at least 16 pixels; got {value}")
    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be >= 1; got {num_frames}")
    if not 1 <= int(max_objects) <= MAX_OBJECTS:
        raise ValueError(f"max_objects must lie in 1..{MAX_OBJECTS}; got {max_objects}")
    if not 0 <= int(max_distractors) <= 4:
        raise ValueError(f"max_distractors must lie in 0..4; got {max_distractors}")
    for key, value in probabilities.items():
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{key} must lie in [0, 1]; got {value}")
    if not 0.0 < float(min_object_size) <= float(max_object_size) <= 1.0:
        raise ValueError(
            "object sizes must satisfy 0 < min_object_size <= max_object_size <= 1; got "
            f"min_object_size={min_object_size}, max_object_size={max_object_size}"
        )
    for key, value in (("motion_speed", motion_speed), ("pan_speed", pan_speed)):
        if float(value) < 0.0:
            raise ValueError(f"{key} must be >= 0; got {value}")
