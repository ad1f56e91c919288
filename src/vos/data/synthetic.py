"""A procedural video object segmentation dataset, deterministic by seed.

Each video is a parametric scene drawn from one integer seed: a textured background seen
through a panning camera, 1..4 annotated *target* objects and, in some videos, unannotated
*distractors* that look like one of the targets. Every trajectory (centre, size, rotation,
camera offset) is precomputed as an array over all frames when the scene is built, so any
frame can be rendered on its own in well under a millisecond at 128x224 (OpenCV rasterising and
affine warps); training reads three frames of a video without rendering the rest. Building a
scene (about 5 ms) rasterises the silhouettes of all frames once, to find when each target is
visible and to measure the factors.

What a scene contains
---------------------
- **Background**: a smooth random field of muted colours with stripes, soft blobs or speckle,
  plus fine noise; it is larger than the frame and the camera pans over it (the whole background
  translates by a sub-pixel offset per frame).
- **Targets**: shapes (ellipse, rectangle, triangle, star, regular polygon, blob) with a texture
  (noisy solid colour, stripes, checker, dots, rings) drawn in the object's own coordinates, so
  the texture moves, turns and scales with it. The targets of one video never share a shape, a
  texture kind, or a hue band, so they can be told apart by appearance. Sizes (bounding
  diameter) lie around ``min_object_size..max_object_size`` of the frame height.
- **Motion**: centres follow a slow drift plus a sum of sinusoids, reflected at the walls of a box
  that keeps at least half of an object in frame; size and rotation change smoothly over time.
- **Layers**: every object and distractor has its own depth; frames are painted back to front,
  and masks show only the visible pixels of each target (distractors are background, 0).

Factors (``VideoInfo.factors``; each is *measured* on the built scene, so it is True only when
the thing really happens, whether or not it was staged on purpose):

- ``distractors``: an unannotated object with the same shape family and texture kind as one of
  the targets, in a similar but shifted colour, is at least a quarter visible in some frame.
- ``occlusion``: some target loses at least 10% of its in-frame area to another object (target or
  distractor) in some frame. Staged by sending an object on top of a target; videos that do not
  stage it are re-drawn a few times to keep objects apart.
- ``fast_motion``: some visible target moves its centre by at least ``FAST_MOTION_FRACTION`` of
  the shorter frame side between two consecutive frames. Staged as a one-frame jump; ordinary
  motion stays well below the threshold (exits included).
- ``leaves_frame``: some target is at least 30% visible, then less than 10% in frame, then at least
  30% visible again. Staged as a smooth excursion through the nearest frame edge.
- ``late_objects``: some target is first visible after frame 0 (its first mask is given there,
  YouTube-VOS style). Staged by spawning a target at a free spot at a later frame.

``SyntheticSource`` decides which factors to stage from the video index with a low-discrepancy
sequence, so each staged factor covers its probability's share of any split (there is no luck of
the draw on small splits). Train and val videos get their seeds from
``SeedSequence([seed, split word, index])``, so no val video is a train video.

Flow: ``SyntheticScene.flow(t, reference)`` is the exact flow from frame t to any frame (default
t-1, the backward flow) of the visible surface at each pixel: for an object, its frame-t
placement is inverted and the reference frame's placement applied; for the background it is
the camera offset difference. Training clips that skip or run backwards get the flow between
their actual frames this way (`read_flow_between`).

Run ``python -m vos.data.synthetic --out data/syn --videos 8 --frames 40 --seed 0`` to export a
split pair in the DAVIS 2017 layout (see `export_davis`).
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from vos.data.davis import DavisLayout
from vos.data.palette import write_frame, write_mask
from vos.data.source import DatasetError, VideoInfo, VideoSource

FACTOR_NAMES: tuple[str, ...] = (
    "distractors",
    "occlusion",
    "fast_motion",
    "leaves_frame",
    "late_objects",
)
SPLITS: tuple[str, ...] = ("train", "val")
MIN_VAL_FRAMES = 30
MAX_OBJECTS = 4

SHAPE_KINDS: tuple[str, ...] = ("ellipse", "rectangle", "triangle", "star", "polygon", "blob")
TEXTURE_KINDS: tuple[str, ...] = ("noise", "stripes", "checker", "dots", "rings")
BACKGROUND_STYLES: tuple[str, ...] = ("stripes", "blobs", "speckle")

# Thresholds that define the factors (fractions of an object's area or of the frame size).
OCCLUSION_LOSS = 0.10  # share of in-frame area hidden by other objects
OUT_OF_FRAME = 0.10  # in-frame share below which an object has left the frame
WELL_VISIBLE = 0.30  # visible share before and after leaving the frame
DISTRACTOR_VISIBLE = 0.25  # visible share for a distractor to count
FAST_MOTION_FRACTION = 0.18  # centre displacement per frame, fraction of min(height, width)

_SUBPIXEL_BITS = 4  # fixed-point vertices for cv2.fillPoly: 1/16 pixel
_SPRITE_MARGIN = 1.15  # sprites cover the unit disc with a margin for bilinear sampling
# Seeds of the two splits differ by this entropy word, so train and val never share a video.
_SPLIT_WORDS = {split: int.from_bytes(split.encode(), "little") for split in SPLITS}
# Irrational steps (fractional parts of sqrt of primes) for the per-factor Weyl sequences.
_WEYL_STEPS = {name: math.sqrt(prime) % 1.0 for name, prime in zip(FACTOR_NAMES, (2, 3, 5, 7, 11))}


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _rotation(angle: float) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[cos, -sin], [sin, cos]])


def _fold(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Reflect values into [low, high] (a bounce at the walls; identity inside the box)."""
    span = np.maximum(high - low, 1e-6)
    phase = np.mod(values - low, 2.0 * span)
    return low + span - np.abs(phase - span)


def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), dtype=np.float32) * 255.0


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _shape_polygon(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Vertices ``[V, 2]`` of a shape in unit coordinates (farthest vertex at radius 1)."""
    if kind == "ellipse":
        angles = np.linspace(0.0, 2.0 * np.pi, 40, endpoint=False)
        points = np.stack([np.cos(angles), rng.uniform(0.55, 0.85) * np.sin(angles)], axis=1)
    elif kind == "rectangle":
        half_height = rng.uniform(0.45, 0.8)
        points = np.array(
            [[-1, -half_height], [1, -half_height], [1, half_height], [-1, half_height]]
        )
    elif kind == "triangle":
        angles = np.pi / 2 + np.deg2rad([0.0, 120.0, 240.0] + rng.uniform(-12, 12, 3))
        points = np.stack([np.cos(angles), np.sin(angles)], axis=1) * rng.uniform(0.85, 1.0, (3, 1))
    elif kind == "star":
        tips = int(rng.choice([5, 6]))
        angles = np.linspace(0.0, 2.0 * np.pi, 2 * tips, endpoint=False)
        radii = np.where(np.arange(2 * tips) % 2 == 0, 1.0, rng.uniform(0.45, 0.58))
        points = np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]
    elif kind == "polygon":
        sides = int(rng.choice([5, 6, 8]))
        angles = np.linspace(0.0, 2.0 * np.pi, sides, endpoint=False)
        points = np.stack([np.cos(angles), rng.uniform(0.8, 1.0) * np.sin(angles)], axis=1)
    elif kind == "blob":
        angles = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
        radii = np.ones_like(angles)
        for harmonic in (2, 3, 4):
            radii += rng.uniform(0.05, 0.14) * np.cos(harmonic * angles + rng.uniform(0, 2 * np.pi))
        points = np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]
    else:
        raise ValueError(f"unknown shape kind {kind!r}")
    return points / np.linalg.norm(points, axis=1).max()


@dataclass
class _Layer:
    """One object of a scene (a target or a distractor) and its whole trajectory."""

    is_target: bool
    shape: str
    polygon: np.ndarray  # [V, 2] unit coordinates, bounding radius 1
    texture: str
    pattern: dict[str, float]  # texture parameters in unit coordinates
    colours: tuple[np.ndarray, np.ndarray]  # primary, secondary RGB (float, 0..255)
    radius: np.ndarray  # [T] bounding radius in pixels
    angle: np.ndarray  # [T] rotation in radians
    centre: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # [T, 2] (x, y) pixels
    start: int = 0  # first frame in which the object exists (late objects spawn there)

    @cached_property
    def unit_area(self) -> float:
        return _polygon_area(self.polygon)

    def box(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Where its centre may wander: at least about half of it stays in frame."""
        margin = 0.5 * float(self.radius.max())
        low = np.array([margin, margin])
        high = np.maximum(np.array([width - margin, height - margin]), low + 1.0)
        return low, high


@dataclass
class _Composition:
    """The visible surface of one frame: which layer is on top at each pixel."""

    surface: np.ndarray  # uint8 [H, W]: 0 background, 1 + layer index otherwise
    # (layer index, y0, x0, silhouette) in back-to-front order; silhouette is bool [h, w]
    placements: list[tuple[int, int, int, np.ndarray]]


# --------------------------------------------------------------------------------------------
# The scene
# --------------------------------------------------------------------------------------------


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
        staged: which factors to stage, overriding the ``*_prob`` draws (used by
            `SyntheticSource` to spread the factors evenly over a split); missing keys are drawn.

    The factors reported by `factors` are measured on the result, not the staging wishes.
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
        staged: Mapping[str, bool] | None = None,
    ) -> None:
        _check_knobs(
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
            },
            min_object_size=min_object_size,
            max_object_size=max_object_size,
            motion_speed=motion_speed,
            pan_speed=pan_speed,
        )
        unknown = set(staged or {}) - set(FACTOR_NAMES)
        if unknown:
            raise ValueError(f"staged: unknown factors {sorted(unknown)}; known: {FACTOR_NAMES}")
        self.seed = int(seed)
        self.height = int(height)
        self.width = int(width)
        self._num_frames = int(num_frames)
        self._short_side = float(min(height, width))
        self.fast_motion_px = FAST_MOTION_FRACTION * self._short_side
        self._speed_unit = 0.012 * self._short_side * motion_speed
        self._motion_speed = float(motion_speed)
        self._time = np.arange(self._num_frames, dtype=np.float64)

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

        self._layers = self._draw_layers(
            rng, max_objects, max_distractors, min_object_size, max_object_size
        )
        self._depth_order = [int(i) for i in rng.permutation(len(self._layers))]
        self._background_style = str(rng.choice(BACKGROUND_STYLES))
        self._background_hue = float(rng.random())
        self._pan = self._draw_pan(rng, pan_speed)
        self._plan_motion(rng)

        self._last_composition: tuple[int, _Composition] | None = None
        self._last_frame: tuple[int, np.ndarray] | None = None
        self._measure()

    # -- public API ------------------------------------------------------------------------

    @property
    def num_frames(self) -> int:
        return self._num_frames

    @property
    def num_objects(self) -> int:
        return len(self.first_frames)

    @property
    def num_layers(self) -> int:
        """Objects drawn in the scene: targets (including never visible ones) and distractors."""
        return len(self._layers)

    def frame(self, t: int) -> np.ndarray:
        """RGB ``uint8 [H, W, 3]`` of frame ``t``."""
        t = self._check_frame(t)
        if self._last_frame is None or self._last_frame[0] != t:
            self._last_frame = (t, self._render(t))
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
        flow = np.zeros((2, self.height, self.width), dtype=np.float32)
        if reference == t:
            return flow
        pan_step = self._pan[t] - self._pan[reference]
        flow[0] = pan_step[0]
        flow[1] = pan_step[1]
        composition = self._compose(t)
        for index, y0, x0, placed in composition.placements:
            height, width = placed.shape
            region = composition.surface[y0 : y0 + height, x0 : x0 + width] == index + 1
            if not region.any():
                continue
            rows, cols = np.nonzero(region)
            points = np.stack([cols + x0, rows + y0], axis=1).astype(np.float64)
            layer = self._layers[index]
            # undo the frame-t placement, apply the reference one: p' = B (p - c_t) + c_ref
            step = _rotation(layer.angle[reference] - layer.angle[t]) * (
                layer.radius[reference] / layer.radius[t]
            )
            moved = (points - layer.centre[t]) @ step.T + layer.centre[reference]
            displacement = (moved - points).astype(np.float32)
            flow[0, rows + y0, cols + x0] = displacement[:, 0]
            flow[1, rows + y0, cols + x0] = displacement[:, 1]
        return flow

    # -- building the scene -----------------------------------------------------------------

    def _draw_layers(
        self,
        rng: np.random.Generator,
        max_objects: int,
        max_distractors: int,
        min_size: float,
        max_size: float,
    ) -> list[_Layer]:
        staged = self.staged
        num_targets = int(rng.integers(1, max_objects + 1))
        num_distractors = (
            int(rng.integers(1, max_distractors + 1))
            if staged["distractors"] and max_distractors > 0
            else 0
        )
        # frame 0 always holds a target; an occluder needs a second object
        needed = 1 + int(staged["late_objects"])
        needed += int(staged["occlusion"] and num_distractors == 0)
        num_targets = min(max(num_targets, needed), max_objects)
        self._num_late = int(staged["late_objects"] and num_targets >= 2)

        shapes = rng.permutation(SHAPE_KINDS)[:num_targets]
        textures = rng.permutation(TEXTURE_KINDS)[:num_targets]
        first_hue = rng.random()
        layers = []
        for index in range(num_targets):
            # hues spread evenly around the wheel keep the targets of a video distinct
            hue = first_hue + index / num_targets + rng.uniform(-0.03, 0.03)
            primary = _hsv(hue, rng.uniform(0.6, 0.95), rng.uniform(0.65, 0.95))
            secondary = _hsv(
                hue + rng.uniform(-0.04, 0.04), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.45)
            )
            radius = self._draw_radius(rng, min_size, max_size)
            layers.append(
                _Layer(
                    is_target=True,
                    shape=str(shapes[index]),
                    polygon=_shape_polygon(str(shapes[index]), rng),
                    texture=str(textures[index]),
                    pattern=_draw_pattern(str(textures[index]), rng, float(radius.mean())),
                    colours=(primary, secondary),
                    radius=radius,
                    angle=self._draw_angle(rng),
                )
            )
        for _ in range(num_distractors):
            model = layers[int(rng.integers(num_targets))]
            # same family: the model's outline squashed a little; same texture kind and pattern;
            # a hue shifted enough to tell apart, but closer than any other target's
            squash = np.array([1.0, rng.uniform(0.8, 1.0)])
            polygon = model.polygon * (squash if rng.random() < 0.5 else squash[::-1])
            polygon /= np.linalg.norm(polygon, axis=1).max()
            shift = rng.choice([-1.0, 1.0]) * rng.uniform(0.045, 0.075)
            primary_hsv = colorsys.rgb_to_hsv(*(model.colours[0] / 255.0))
            secondary_hsv = colorsys.rgb_to_hsv(*(model.colours[1] / 255.0))
            primary = _hsv(primary_hsv[0] + shift, primary_hsv[1], primary_hsv[2])
            secondary = _hsv(secondary_hsv[0] + shift, secondary_hsv[1], secondary_hsv[2])
            pattern = dict(model.pattern)
            pattern["angle"] = float(rng.uniform(0.0, np.pi))
            layers.append(
                _Layer(
                    is_target=False,
                    shape=model.shape,
                    polygon=polygon,
                    texture=model.texture,
                    pattern=pattern,
                    colours=(primary, secondary),
                    radius=model.radius * rng.uniform(0.8, 1.2),
                    angle=self._draw_angle(rng),
                )
            )
        return layers

    def _draw_radius(
        self, rng: np.random.Generator, min_size: float, max_size: float
    ) -> np.ndarray:
        base = 0.5 * rng.uniform(min_size, max_size) * self.height
        amplitude = rng.uniform(0.06, 0.2)
        period = rng.uniform(24.0, 60.0)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        return base * (1.0 + amplitude * np.sin(2.0 * np.pi * self._time / period + phase))

    def _draw_angle(self, rng: np.random.Generator) -> np.ndarray:
        spin = rng.uniform(-0.05, 0.05)  # radians per frame (about +-3 degrees)
        sway = rng.uniform(0.0, 0.25)
        period = rng.uniform(20.0, 50.0)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        start = rng.uniform(0.0, 2.0 * np.pi)
        return start + spin * self._time + sway * np.sin(2.0 * np.pi * self._time / period + phase)

    def _draw_pan(self, rng: np.random.Generator, pan_speed: float) -> np.ndarray:
        """Camera offset ``[T, 2]``: frame pixel p shows background point p + offset."""
        speed = rng.uniform(0.0, 0.012) * self._short_side * pan_speed
        direction = rng.uniform(0.0, 2.0 * np.pi)
        offset = np.outer(self._time, [speed * math.cos(direction), speed * math.sin(direction)])
        for axis in range(2):
            amplitude = rng.uniform(0.0, 3.0) * pan_speed
            period = rng.uniform(20.0, 60.0)
            offset[:, axis] += amplitude * np.sin(
                2.0 * np.pi * self._time / period + rng.uniform(0.0, 2.0 * np.pi)
            )
        return offset - offset.min(axis=0) + 1.0  # one pixel of margin for bilinear sampling

    def _plan_motion(self, rng: np.random.Generator) -> None:
        """Draw the trajectories and stage the wished factors. Videos that do not stage an
        occlusion are re-drawn a few times to keep the objects' bounding circles apart."""
        attempts = 1 if self.staged["occlusion"] else 10
        best: tuple[int, list[np.ndarray], list[int]] | None = None
        for _ in range(attempts):
            self._stage_all(rng)
            overlaps = self._circle_overlaps()
            if best is None or overlaps < best[0]:
                best = (
                    overlaps,
                    [layer.centre.copy() for layer in self._layers],
                    [layer.start for layer in self._layers],
                )
            if overlaps == 0:
                break
        assert best is not None
        for layer, centre, start in zip(self._layers, best[1], best[2]):
            layer.centre, layer.start = centre, start

    def _stage_all(self, rng: np.random.Generator) -> None:
        num_frames = self._num_frames
        targets = [i for i, layer in enumerate(self._layers) if layer.is_target]
        late = targets[len(targets) - self._num_late :] if self._num_late else []
        on_time = [i for i in range(len(self._layers)) if i not in late]
        for layer in self._layers:  # forget the previous attempt: nothing is placed yet
            layer.centre = np.zeros((0, 2))
            layer.start = num_frames

        # frame-0 objects start spread out, so the first masks are mostly unoccluded
        for index in rng.permutation(on_time):
            layer = self._layers[int(index)]
            layer.start = 0
            anchor = self._free_spot(rng, layer, 0, exclude=int(index))
            layer.centre = self._wander(rng, layer, anchor, 0)

        on_time_targets = [i for i in targets if i not in late]
        occluder = victim = None
        if self.staged["occlusion"] and num_frames >= 4:
            victim = int(rng.choice(on_time_targets))
            candidates = [i for i in on_time if i != victim]
            if candidates:
                occluder = int(rng.choice(candidates))
        movers = [i for i in on_time_targets if i != occluder]
        # the jump comes first: it reflects the rest of the path into the box, which would undo
        # an exit staged before it
        jump = None
        if self.staged["fast_motion"] and movers and num_frames >= 4:
            jumper = int(rng.choice(movers))
            jump = (jumper, self._stage_jump(rng, jumper))
        exit_window = None
        leaver = None
        if self.staged["leaves_frame"] and movers and num_frames >= 12:
            # another target than the victim and the jumper where there is one
            busy = {victim, jump[0] if jump else None}
            leaver = int(rng.choice([i for i in movers if i not in busy] or movers))
            jump_frame = jump[1] if jump is not None and jump[0] == leaver else None
            exit_window = self._stage_exit(rng, leaver, jump_frame)
        if occluder is not None and victim is not None:
            self._stage_occlusion(rng, occluder, victim, exit_window if victim == leaver else None)
        for index in late:
            self._stage_late(rng, index)

    def _wander(
        self,
        rng: np.random.Generator,
        layer: _Layer,
        anchor: np.ndarray,
        anchor_frame: int,
    ) -> np.ndarray:
        """A smooth path ``[T, 2]`` through ``anchor`` at ``anchor_frame``: drift plus sinusoids,
        reflected into the layer's box (the anchor is kept when it lies in the box)."""
        direction = rng.uniform(0.0, 2.0 * np.pi)
        speed = rng.uniform(0.3, 1.0) * self._speed_unit
        drift = speed * np.array([math.cos(direction), math.sin(direction)])
        wiggle = np.zeros((self._num_frames, 2))
        for axis, size in enumerate((self.width, self.height)):
            for _ in range(2):
                amplitude = rng.uniform(0.008, 0.025) * size * self._motion_speed
                period = rng.uniform(18.0, 50.0)
                phase = rng.uniform(0.0, 2.0 * np.pi)
                wiggle[:, axis] += amplitude * np.sin(2.0 * np.pi * self._time / period + phase)
        relative_time = (self._time - anchor_frame)[:, None]
        path = anchor + drift * relative_time + wiggle - wiggle[anchor_frame]
        return _fold(path, *layer.box(self.width, self.height))

    def _free_spot(
        self, rng: np.random.Generator, layer: _Layer, frame: int, exclude: int
    ) -> np.ndarray:
        """The candidate centre (of 32) in the layer's box farthest from objects at ``frame``."""
        low, high = layer.box(self.width, self.height)
        candidates = rng.uniform(low, high, size=(32, 2))
        others = [
            other
            for i, other in enumerate(self._layers)
            if i != exclude and other.start <= frame and len(other.centre) > 0
        ]
        if not others:
            return candidates[0]
        centres = np.stack([other.centre[frame] for other in others])
        radii = np.array([other.radius[frame] for other in others])
        gaps = np.linalg.norm(candidates[:, None] - centres[None], axis=-1) - radii[None]
        clearance = gaps.min(axis=1) - layer.radius[frame]
        return candidates[int(np.argmax(clearance))]

    def _stage_exit(
        self, rng: np.random.Generator, index: int, jump_frame: int | None
    ) -> tuple[int, int] | None:
        """Send the layer out through its nearest frame edge and back, smoothly and slower than
        the fast-motion threshold, away from its jump. Returns (first frame of the excursion,
        first frame back on its path), or None when no excursion fits in the video."""
        layer = self._layers[index]
        num_frames = self._num_frames
        speed_limit = 0.5 * self.fast_motion_px
        middles = [0.5 * rng.uniform(0.7, 1.3) * num_frames for _ in range(3)]
        for middle in [*middles, 0.5 * num_frames]:
            plateau = int(rng.integers(2, 5))
            for ramp in range(3, num_frames):
                begin = int(round(middle - plateau / 2 - ramp))
                end = begin + 2 * ramp + plateau  # first frame fully back on its path
                if begin < 2 or end > num_frames - 3:
                    break
                if jump_frame is not None and begin - 1 <= jump_frame <= end + 1:
                    continue
                out = slice(begin + ramp, begin + ramp + plateau + 1)
                x, y = layer.centre[out, 0], layer.centre[out, 1]
                radius = layer.radius[out]
                # distance to travel so the bounding circle clears each edge in the plateau
                needs = {
                    (-1.0, 0.0): np.max(x + radius),
                    (1.0, 0.0): np.max(self.width - x + radius),
                    (0.0, -1.0): np.max(y + radius),
                    (0.0, 1.0): np.max(self.height - y + radius),
                }
                direction, distance = min(needs.items(), key=lambda item: item[1])
                distance += 2.0
                if 0.5 * np.pi * distance / ramp > speed_limit:
                    continue
                t = self._time
                rise = np.sin(0.5 * np.pi * np.clip((t - begin) / ramp, 0.0, 1.0)) ** 2
                fall = np.sin(0.5 * np.pi * np.clip((end - t) / ramp, 0.0, 1.0)) ** 2
                excursion = np.minimum(rise, fall) * distance
                layer.centre = layer.centre + excursion[:, None] * np.array(direction)
                return begin, end
        return None

    def _stage_jump(self, rng: np.random.Generator, index: int) -> int | None:
        """One abrupt displacement (well above the fast-motion threshold) at a random frame;
        returns that frame (None if no jump fits in the box)."""
        layer = self._layers[index]
        num_frames = self._num_frames
        frames = np.arange(2, num_frames - 1)
        if self.staged["leaves_frame"]:  # keep the middle free for an exit of the same target
            outer = frames[(frames < num_frames // 4) | (frames > (3 * num_frames) // 4)]
            frames = outer if outer.size else frames
        frame = int(rng.choice(frames))
        low, high = layer.box(self.width, self.height)
        position = layer.centre[frame]
        magnitude = rng.uniform(0.3, 0.42) * self._short_side
        while magnitude >= 1.4 * self.fast_motion_px:
            angles = rng.uniform(0.0, 2.0 * np.pi, 16)
            jumps = magnitude * np.stack([np.cos(angles), np.sin(angles)], axis=1)
            inside = np.all((position + jumps >= low) & (position + jumps <= high), axis=1)
            if inside.any():
                jump = jumps[int(np.argmax(inside))]
                layer.centre[frame:] = _fold(layer.centre[frame:] + jump, low, high)
                return frame
            magnitude *= 0.85
        return None

    def _stage_occlusion(
        self,
        rng: np.random.Generator,
        occluder: int,
        victim: int,
        exit_window: tuple[int, int] | None,
    ) -> None:
        """Route the occluder over the victim's centre at some middle frame, in front of it."""
        num_frames = self._num_frames

        def allowed(t: int) -> bool:
            return exit_window is None or not exit_window[0] - 2 <= t <= exit_window[1] + 2

        frames = [t for t in range(num_frames // 4, (3 * num_frames) // 4 + 1) if allowed(t)]
        frames = frames or [t for t in range(1, num_frames - 1) if allowed(t)]
        if not frames:
            return
        frame = int(rng.choice(frames))
        layer, target = self._layers[occluder], self._layers[victim]
        low, high = layer.box(self.width, self.height)
        meeting = target.centre[frame] + rng.uniform(-0.25, 0.25, 2) * target.radius[frame]
        meeting = np.clip(meeting, low, high)
        # of a few paths through the meeting point, the one that starts farthest from the rest
        others = [
            other for i, other in enumerate(self._layers) if i != occluder and other.start == 0
        ]
        best_path, best_clearance = None, -np.inf
        for _ in range(6):
            path = self._wander(rng, layer, meeting, frame)
            clearance = min(
                (
                    float(np.linalg.norm(path[0] - other.centre[0]))
                    - other.radius[0]
                    - layer.radius[0]
                    for other in others
                ),
                default=0.0,
            )
            if clearance > best_clearance:
                best_path, best_clearance = path, clearance
        layer.centre = best_path
        order = self._depth_order
        if order.index(occluder) < order.index(victim):
            a, b = order.index(occluder), order.index(victim)
            order[a], order[b] = order[b], order[a]

    def _stage_late(self, rng: np.random.Generator, index: int) -> None:
        """Spawn a target at a free spot of a later frame (it does not exist before)."""
        layer = self._layers[index]
        num_frames = self._num_frames
        earliest = max(1, round(0.15 * num_frames))
        latest = max(earliest, min(round(0.6 * num_frames), num_frames - 2))
        frame = int(rng.integers(earliest, latest + 1))
        if frame >= num_frames:
            frame = num_frames - 1
        layer.start = num_frames  # keep it out of its own clearance test
        anchor = self._free_spot(rng, layer, frame, exclude=index)
        layer.centre = self._wander(rng, layer, anchor, frame)
        layer.start = frame

    def _circle_overlaps(self) -> int:
        """How many (frame, pair with a target) have overlapping bounding circles."""
        layers = self._layers
        count = 0
        for i, first in enumerate(layers):
            for j in range(i + 1, len(layers)):
                second = layers[j]
                if not (first.is_target or second.is_target):
                    continue
                begin = max(first.start, second.start)
                distance = np.linalg.norm(first.centre[begin:] - second.centre[begin:], axis=1)
                reach = 0.9 * (first.radius[begin:] + second.radius[begin:])
                count += int(np.count_nonzero(distance < reach))
        return count

    # -- measuring what happened ------------------------------------------------------------

    def _measure(self) -> None:
        """Rasterise every frame once (geometry only) to find which targets are visible when,
        assign ids 1..O to the targets ever visible, and measure the factors."""
        num_layers, num_frames = len(self._layers), self._num_frames
        in_frame = np.zeros((num_frames, num_layers))
        visible = np.zeros((num_frames, num_layers))
        for t in range(num_frames):
            composition = self._compose_uncached(t)
            for index, _, _, placed in composition.placements:
                in_frame[t, index] = np.count_nonzero(placed)
            visible[t] = np.bincount(composition.surface.ravel(), minlength=num_layers + 1)[1:]
        full = np.stack([layer.unit_area * layer.radius**2 for layer in self._layers], axis=1)

        self.first_frames: dict[int, int] = {}
        self._layer_of_id: dict[int, int] = {}
        label_of_surface = np.zeros(256, dtype=np.uint8)
        for index, layer in enumerate(self._layers):
            seen = np.flatnonzero(visible[:, index] > 0)
            if layer.is_target and seen.size:
                object_id = len(self.first_frames) + 1
                self.first_frames[object_id] = int(seen[0])
                self._layer_of_id[object_id] = index
                label_of_surface[index + 1] = object_id
        self._label_of_surface = label_of_surface

        targets = list(self._layer_of_id.values())
        distractors = [i for i, layer in enumerate(self._layers) if not layer.is_target]
        visible_share = visible / full
        in_frame_share = in_frame / full

        occluded = (in_frame - visible >= OCCLUSION_LOSS * in_frame) & (in_frame >= 20)
        steps = np.zeros((num_frames, num_layers))
        if num_frames > 1:
            centres = np.stack([layer.centre for layer in self._layers], axis=1)  # [T, L, 2]
            steps[1:] = np.linalg.norm(np.diff(centres, axis=0), axis=-1)
            steps[1:] *= (visible[1:] > 0) & (visible[:-1] > 0)
        self.visible_area = visible  # [T, L] visible pixels per layer
        self.in_frame_area = in_frame  # [T, L] in-frame pixels per layer, occluded or not
        self.factors: dict[str, bool] = {
            "distractors": bool(
                distractors and (visible_share[:, distractors] >= DISTRACTOR_VISIBLE).any()
            ),
            "occlusion": bool(occluded[:, targets].any()),
            "fast_motion": bool((steps[:, targets] >= self.fast_motion_px).any()),
            "leaves_frame": any(
                _leaves_and_returns(visible_share[:, i], in_frame_share[:, i]) for i in targets
            ),
            "late_objects": any(first > 0 for first in self.first_frames.values()),
        }

    # -- rendering ------------------------------------------------------------------------------

    def _check_frame(self, t: int) -> int:
        t = int(t)
        if not 0 <= t < self._num_frames:
            raise IndexError(f"frame {t} out of range for a scene of {self._num_frames} frames")
        return t

    def _place(self, index: int, t: int) -> tuple[int, int, np.ndarray] | None:
        """Rasterise layer ``index`` at frame ``t``: (y0, x0, bool silhouette) or None."""
        layer = self._layers[index]
        if t < layer.start:
            return None
        corners = layer.polygon @ (layer.radius[t] * _rotation(layer.angle[t])).T + layer.centre[t]
        x0 = max(int(math.floor(corners[:, 0].min())), 0)
        y0 = max(int(math.floor(corners[:, 1].min())), 0)
        x1 = min(int(math.ceil(corners[:, 0].max())) + 1, self.width)
        y1 = min(int(math.ceil(corners[:, 1].max())) + 1, self.height)
        if x0 >= x1 or y0 >= y1:
            return None
        fixed = np.round((corners - (x0, y0)) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
        canvas = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        cv2.fillPoly(canvas, [fixed.reshape(-1, 1, 2)], 1, cv2.LINE_8, _SUBPIXEL_BITS)
        if not canvas.any():
            return None
        return y0, x0, canvas.view(bool)

    def _compose_uncached(self, t: int) -> _Composition:
        surface = np.zeros((self.height, self.width), dtype=np.uint8)
        placements = []
        for index in self._depth_order:
            placed = self._place(index, t)
            if placed is None:
                continue
            y0, x0, silhouette = placed
            height, width = silhouette.shape
            surface[y0 : y0 + height, x0 : x0 + width][silhouette] = index + 1
            placements.append((index, y0, x0, silhouette))
        return _Composition(surface, placements)

    def _compose(self, t: int) -> _Composition:
        if self._last_composition is None or self._last_composition[0] != t:
            self._last_composition = (t, self._compose_uncached(t))
        return self._last_composition[1]

    def _render(self, t: int) -> np.ndarray:
        offset = self._pan[t]
        to_world = np.array([[1.0, 0.0, offset[0]], [0.0, 1.0, offset[1]]])
        frame = cv2.warpAffine(
            self._world,
            to_world,
            (self.width, self.height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )
        composition = self._compose(t)
        for index, y0, x0, placed in composition.placements:
            layer = self._layers[index]
            sprite, pixels_per_unit = self._sprites[index]
            centre_px = (sprite.shape[0] - 1) / 2.0
            # frame pixel -> sprite pixel: undo the placement, then scale into the sprite
            linear = _rotation(-layer.angle[t]) * (pixels_per_unit / layer.radius[t])
            shift = linear @ (np.array([x0, y0], dtype=np.float64) - layer.centre[t]) + centre_px
            height, width = placed.shape
            patch = cv2.warpAffine(
                sprite,
                np.hstack([linear, shift[:, None]]),
                (width, height),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REPLICATE,
            )
            region = frame[y0 : y0 + height, x0 : x0 + width]
            region[placed] = patch[placed]
        return frame

    @cached_property
    def _sprites(self) -> list[tuple[np.ndarray, float]]:
        """Each layer's texture in its own unit coordinates, at least as fine as the screen."""
        rng = np.random.default_rng([self.seed, 1])
        return [
            _render_sprite(layer, float(math.ceil(layer.radius.max())) + 1.0, rng)
            for layer in self._layers
        ]

    @cached_property
    def _world(self) -> np.ndarray:
        """The background, large enough for the whole camera pan."""
        rng = np.random.default_rng([self.seed, 2])
        extent = np.ceil(self._pan.max(axis=0)).astype(int) + 2
        width, height = self.width + int(extent[0]), self.height + int(extent[1])
        grid = np.stack(
            [
                _hsv(
                    self._background_hue + rng.uniform(-0.12, 0.12),
                    rng.uniform(0.05, 0.4),
                    rng.uniform(0.3, 0.75),
                )
                for _ in range(3 * 5)
            ]
        ).reshape(3, 5, 3)
        world = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        if self._background_style == "stripes":
            angle = rng.uniform(0.0, np.pi)
            period = rng.uniform(10.0, 30.0)
            ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
            wave = np.sin(2.0 * np.pi * (xs * math.cos(angle) + ys * math.sin(angle)) / period)
            tint = rng.uniform(0.5, 1.0, 3).astype(np.float32) * rng.uniform(12.0, 25.0)
            world += wave[..., None] * tint
        elif self._background_style == "blobs":
            for _ in range(int(rng.integers(12, 25))):
                colour = _hsv(rng.random(), rng.uniform(0.05, 0.35), rng.uniform(0.25, 0.8))
                cv2.ellipse(
                    world,
                    (int(rng.integers(width)), int(rng.integers(height))),
                    (int(rng.integers(4, 18)), int(rng.integers(4, 18))),
                    float(rng.uniform(0, 180)),
                    0.0,
                    360.0,
                    colour.tolist(),
                    -1,
                )
            world = cv2.GaussianBlur(world, (0, 0), 1.2)
        else:
            speckle = rng.normal(0.0, 14.0, (height // 3 + 1, width // 3 + 1)).astype(np.float32)
            speckle = cv2.resize(speckle, (width, height), interpolation=cv2.INTER_LINEAR)
            world += speckle[..., None]
        world += rng.normal(0.0, 5.0, (height, width, 1)).astype(np.float32)
        world += rng.normal(0.0, 2.0, (height, width, 3)).astype(np.float32)
        return np.clip(world, 0, 255).astype(np.uint8)


def _leaves_and_returns(visible_share: np.ndarray, in_frame_share: np.ndarray) -> bool:
    """Well visible, then (almost) out of frame, then well visible again."""
    seen = visible_share >= WELL_VISIBLE
    for t in np.flatnonzero(in_frame_share < OUT_OF_FRAME):
        if seen[:t].any() and seen[t + 1 :].any():
            return True
    return False


def _draw_pattern(texture: str, rng: np.random.Generator, radius: float) -> dict[str, float]:
    """Texture parameters in the object's unit coordinates (its bounding radius is 1). Pattern
    periods are at least about 6 pixels on screen at the object's mean ``radius``, so that they
    neither alias into noise nor vanish when the object shrinks."""
    finest = 6.5 / max(radius, 1.0)  # 6.5 pixels in unit coordinates
    pattern = {"angle": float(rng.uniform(0.0, np.pi))}
    if texture == "stripes":
        pattern["period"] = max(float(rng.uniform(0.35, 0.55)), finest)
    elif texture == "checker":
        pattern["cell"] = max(float(rng.uniform(0.28, 0.42)), 0.6 * finest)
    elif texture == "dots":
        pattern["spacing"] = max(float(rng.uniform(0.4, 0.55)), finest)
    elif texture == "rings":
        pattern["period"] = max(float(rng.uniform(0.3, 0.45)), finest)
    return pattern


def _render_sprite(
    layer: _Layer, pixels_per_unit: float, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    half = int(math.ceil(_SPRITE_MARGIN * pixels_per_unit))
    coords = (np.arange(2 * half + 1, dtype=np.float32) - half) / pixels_per_unit
    xs, ys = np.meshgrid(coords, coords)
    angle = layer.pattern["angle"]
    u = xs * math.cos(angle) + ys * math.sin(angle)
    v = -xs * math.sin(angle) + ys * math.cos(angle)
    if layer.texture == "stripes":
        weight = (np.sin(2.0 * np.pi * u / layer.pattern["period"]) > 0).astype(np.float32)
    elif layer.texture == "checker":
        cell = layer.pattern["cell"]
        weight = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    elif layer.texture == "dots":
        spacing = layer.pattern["spacing"]
        du, dv = u / spacing - np.round(u / spacing), v / spacing - np.round(v / spacing)
        weight = (du**2 + dv**2 < 0.3**2).astype(np.float32)
    elif layer.texture == "rings":
        radius = np.sqrt(xs**2 + ys**2)
        weight = (np.sin(2.0 * np.pi * radius / layer.pattern["period"]) > 0).astype(np.float32)
    else:  # noisy solid colour: faint blotches of the secondary colour
        blotches = rng.uniform(0.0, 0.45, (5, 5)).astype(np.float32)
        weight = cv2.resize(blotches, (2 * half + 1, 2 * half + 1), interpolation=cv2.INTER_CUBIC)
    primary, secondary = layer.colours
    sprite = primary * (1.0 - weight[..., None]) + secondary * weight[..., None]
    sprite += rng.normal(0.0, 6.0, (2 * half + 1, 2 * half + 1, 1)).astype(np.float32)
    sprite = cv2.GaussianBlur(sprite.astype(np.float32), (0, 0), 0.8)  # tame aliasing
    return np.clip(sprite, 0, 255).astype(np.uint8), pixels_per_unit


def _check_knobs(
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


# --------------------------------------------------------------------------------------------
# A split of scenes as a VideoSource
# --------------------------------------------------------------------------------------------


def video_seed(seed: int, split: str, index: int) -> int:
    """The scene seed of video ``index`` of ``split``: the split is an entropy word, so a val
    video never equals a train video, whatever ``seed``."""
    if split not in _SPLIT_WORDS:
        raise DatasetError(
            f"unknown split {split!r} for the synthetic dataset; use one of {SPLITS}"
        )
    state = np.random.SeedSequence([int(seed), _SPLIT_WORDS[split], int(index)]).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


class SyntheticSource(VideoSource):
    """A split (``"train"`` or ``"val"``) of ``num_videos`` procedural videos named
    ``syn_<split>_0000`` and up, rendered on demand.

    ``knobs`` are `SyntheticScene`'s keyword arguments (``max_objects``, ``distractor_prob``,
    ...). Which factors each video stages follows a low-discrepancy sequence over the video
    index, so a split of N videos stages each factor in about ``prob * N`` of them; the factors
    reported are measured. Val videos need at least 30 frames (the metrics skip the first and
    last frame, and the factors need time to happen). Infos are kept for every video; scenes
    in a small LRU cache of ``cache_size``.
    """

    def __init__(
        self,
        split: str,
        num_videos: int,
        num_frames: int,
        seed: int = 0,
        height: int = 128,
        width: int = 224,
        cache_size: int = 16,
        scene: Mapping[str, float | int | bool] | None = None,
        **knobs: float | int | bool,
    ) -> None:
        # ``scene`` (the config's dict of scene knobs) and keyword knobs are the same thing;
        # keywords win.
        knobs = {**dict(scene or {}), **knobs}
        if split not in SPLITS:
            raise DatasetError(
                f"unknown split {split!r} for the synthetic dataset; use one of {SPLITS}"
            )
        if int(num_videos) < 1:
            raise DatasetError(f"num_videos must be >= 1; got {num_videos}")
        if split == "val" and int(num_frames) < MIN_VAL_FRAMES:
            raise DatasetError(
                f"num_frames must be >= {MIN_VAL_FRAMES} for the val split; got {num_frames}"
            )
        unknown = set(knobs) - _SCENE_KNOBS
        if unknown:
            raise DatasetError(
                f"unknown synthetic dataset options {sorted(unknown)}; known: {sorted(_SCENE_KNOBS)}"
            )
        self.split = split
        self.num_videos = int(num_videos)
        self.num_frames = int(num_frames)
        self.seed = int(seed)
        self.height = int(height)
        self.width = int(width)
        self.knobs = dict(knobs)
        self.cache_size = max(1, int(cache_size))
        # validate the knobs once, up front, rather than at the first read
        SyntheticScene(0, height=self.height, width=self.width, num_frames=self.num_frames, **knobs)
        offsets = np.random.default_rng([self.seed, _SPLIT_WORDS[split], 1 << 20]).random(
            len(FACTOR_NAMES)
        )
        self._weyl_offsets = dict(zip(FACTOR_NAMES, offsets))
        self._names = [f"syn_{split}_{index:04d}" for index in range(self.num_videos)]
        self._index = {name: index for index, name in enumerate(self._names)}
        self._scenes: OrderedDict[int, SyntheticScene] = OrderedDict()
        self._infos: dict[int, VideoInfo] = {}

    def videos(self) -> list[str]:
        return list(self._names)

    def staged_factors(self, index: int) -> dict[str, bool]:
        """Which factors video ``index`` stages: a Weyl sequence per factor, so any run of
        videos stages each in close to its probability's share."""
        probabilities = {
            "distractors": self.knobs.get("distractor_prob", 0.4),
            "occlusion": self.knobs.get("occlusion_prob", 0.4),
            "fast_motion": self.knobs.get("fast_motion_prob", 0.4),
            "leaves_frame": self.knobs.get("leave_frame_prob", 0.4),
            "late_objects": self.knobs.get("late_object_prob", 0.4),
        }
        return {
            name: bool(
                (index * _WEYL_STEPS[name] + self._weyl_offsets[name]) % 1.0
                < float(probabilities[name])
            )
            for name in FACTOR_NAMES
        }

    def scene(self, video: str) -> SyntheticScene:
        index = self._video_index(video)
        scene = self._scenes.get(index)
        if scene is not None:
            self._scenes.move_to_end(index)
            return scene
        scene = SyntheticScene(
            video_seed(self.seed, self.split, index),
            height=self.height,
            width=self.width,
            num_frames=self.num_frames,
            staged=self.staged_factors(index),
            **self.knobs,
        )
        self._scenes[index] = scene
        while len(self._scenes) > self.cache_size:
            self._scenes.popitem(last=False)
        return scene

    def info(self, video: str) -> VideoInfo:
        index = self._video_index(video)
        if index not in self._infos:
            scene = self.scene(video)
            self._infos[index] = VideoInfo(
                name=video,
                frame_names=[f"{t:05d}" for t in range(self.num_frames)],
                height=self.height,
                width=self.width,
                first_frames=dict(scene.first_frames),
                annotated=list(range(self.num_frames)),
                factors=dict(scene.factors),
            )
        return self._infos[index]

    def read_frame(self, video: str, index: int) -> np.ndarray:
        return self.scene(video).frame(index)

    def read_mask(self, video: str, index: int) -> np.ndarray:
        return self.scene(video).mask(index)

    def read_flow(self, video: str, index: int) -> np.ndarray:
        return self.scene(video).flow(index)

    def read_flow_between(self, video: str, target: int, reference: int) -> np.ndarray:
        return self.scene(video).flow(target, reference)

    def _video_index(self, video: str) -> int:
        if video not in self._index:
            raise DatasetError(
                f"unknown video {video!r} in synthetic split {self.split!r} "
                f"(names are syn_{self.split}_0000 .. {self._names[-1]})"
            )
        return self._index[video]


_SCENE_KNOBS = {
    "max_objects",
    "max_distractors",
    "distractor_prob",
    "fast_motion_prob",
    "late_object_prob",
    "leave_frame_prob",
    "occlusion_prob",
    "min_object_size",
    "max_object_size",
    "motion_speed",
    "pan_speed",
}


# --------------------------------------------------------------------------------------------
# Export to the DAVIS layout
# --------------------------------------------------------------------------------------------


def flow_path(layout: DavisLayout, video: str, frame_name: str) -> Path:
    """Where `export_davis` writes a frame's backward flow: ``Flow/<resolution>/<video>/``."""
    return layout.root / "Flow" / layout.resolution / video / f"{frame_name}.npy"


def export_davis(
    out_root: str | Path,
    *,
    videos_per_split: int,
    num_frames: int,
    seed: int = 0,
    height: int = 128,
    width: int = 224,
    **knobs: float | int | bool,
) -> dict[str, list[str]]:
    """Write a train and a val split in the DAVIS 2017 layout under ``out_root``:

    - ``JPEGImages/480p/<video>/00000.jpg`` frames,
    - ``Annotations/480p/<video>/00000.png`` palette masks (DAVIS palette),
    - ``Flow/480p/<video>/00000.npy`` backward flow, float32 ``[2, H, W]``,
    - ``ImageSets/2017/{train,val}.txt`` listing the videos,
    - ``factors.json``: ``{video: {factor: bool}}`` for both splits.

    The folders say ``480p`` because that is the name of DAVIS's layout; the frames are
    ``height x width``. ``knobs`` go to `SyntheticScene`. Returns the video names per split.
    """
    layout = DavisLayout(Path(out_root))
    written: dict[str, list[str]] = {}
    factors: dict[str, dict[str, bool]] = {}
    for split in SPLITS:
        source = SyntheticSource(
            split, videos_per_split, num_frames, seed=seed, height=height, width=width, **knobs
        )
        for video in source.videos():
            scene, info = source.scene(video), source.info(video)
            for t, frame_name in enumerate(info.frame_names):
                write_frame(layout.frame_path(video, frame_name), scene.frame(t))
                write_mask(layout.mask_path(video, frame_name), scene.mask(t))
                _save_array(flow_path(layout, video, frame_name), scene.flow(t))
            factors[video] = dict(info.factors)
        image_set = layout.image_set(split)
        image_set.parent.mkdir(parents=True, exist_ok=True)
        image_set.write_text("".join(f"{video}\n" for video in source.videos()))
        written[split] = source.videos()
    (layout.root / "factors.json").write_text(json.dumps(factors, indent=2, sort_keys=True) + "\n")
    return written


def _save_array(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)


def dataset_config_defaults() -> dict:
    """Frame size and scene knobs of ``conf/dataset/synthetic.yaml``: the export and the
    training data come from one definition."""
    from omegaconf import OmegaConf

    from vos.config import CONFIG_DIR

    cfg = OmegaConf.load(CONFIG_DIR / "dataset" / "synthetic.yaml")
    return {"height": cfg.height, "width": cfg.width, "scene": OmegaConf.to_container(cfg.scene)}


def main(argv: list[str] | None = None) -> None:
    defaults = dataset_config_defaults()
    parser = argparse.ArgumentParser(
        description="Export the synthetic VOS dataset (train and val) in the DAVIS 2017 layout, "
        "with the frame size and scene knobs of conf/dataset/synthetic.yaml unless overridden."
    )
    parser.add_argument("--out", required=True, help="dataset root to write")
    parser.add_argument("--videos", type=int, default=8, help="videos per split")
    parser.add_argument("--frames", type=int, default=40, help="frames per video (val: >= 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=defaults["height"])
    parser.add_argument("--width", type=int, default=defaults["width"])
    parser.add_argument("--max-objects", type=int, default=defaults["scene"]["max_objects"])
    args = parser.parse_args(argv)
    scene = {**defaults["scene"], "max_objects": args.max_objects}
    written = export_davis(
        args.out,
        videos_per_split=args.videos,
        num_frames=args.frames,
        seed=args.seed,
        height=args.height,
        width=args.width,
        **scene,
    )
    print(
        f"wrote {len(written['train'])} train + {len(written['val'])} val videos x "
        f"{args.frames} frames ({args.height}x{args.width}, seed {args.seed}) to {args.out}"
    )


if __name__ == "__main__":
    main()
