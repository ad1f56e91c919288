"""The factors a video shows, *measured* on the built scene: each is True only when the thing
really happens, whether or not it was staged on purpose.

- ``distractors``: an unannotated object (the look-alike of a target) is at least
  ``DISTRACTOR_VISIBLE`` visible in some frame.
- ``occlusion``: some target loses at least ``OCCLUSION_LOSS`` of its in-frame area to another
  object in some frame.
- ``fast_motion``: some visible target moves its centre by at least ``FAST_MOTION_FRACTION``
  of the shorter frame side between two consecutive frames.
- ``leaves_frame``: some target is at least ``WELL_VISIBLE`` visible, then less than
  ``OUT_OF_FRAME`` in frame, then at least ``WELL_VISIBLE`` visible again.
- ``late_objects``: some target is first visible after frame 0.

Measuring also decides the object ids: targets ever visible get 1..O in layer order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vos.data.synthetic.composition import compose
from vos.data.synthetic.layers import ScenePlan

FACTOR_NAMES: tuple[str, ...] = (
    "distractors",
    "occlusion",
    "fast_motion",
    "leaves_frame",
    "late_objects",
)

# Thresholds that define the factors (fractions of an object's area or of the frame size).
OCCLUSION_LOSS = 0.10  # share of in-frame area hidden by other objects
OUT_OF_FRAME = 0.10  # in-frame share below which an object has left the frame
WELL_VISIBLE = 0.30  # visible share before and after leaving the frame
DISTRACTOR_VISIBLE = 0.25  # visible share for a distractor to count
FAST_MOTION_FRACTION = 0.18  # centre displacement per frame, fraction of min(height, width)


@dataclass
class Measurement:
    """What a built scene shows, frame by frame, and the ids of its targets."""

    first_frames: dict[int, int]  # object id -> first frame it is visible in
    layer_of_id: dict[int, int]  # object id -> layer index
    label_of_surface: np.ndarray  # uint8 [256]: surface value -> object id (0: not a target)
    visible_area: np.ndarray  # [T, L] visible pixels per layer
    in_frame_area: np.ndarray  # [T, L] in-frame pixels per layer, occluded or not
    factors: dict[str, bool]  # FACTOR_NAMES -> whether it happens


def measure(plan: ScenePlan, fast_motion_px: float) -> Measurement:
    """Rasterise every frame once (geometry only) to find which targets are visible when,
    assign ids 1..O to the targets ever visible, and measure the factors."""
    in_frame, visible = _areas(plan)
    first_frames, layer_of_id, label_of_surface = _identify_targets(plan, visible)
    return Measurement(
        first_frames=first_frames,
        layer_of_id=layer_of_id,
        label_of_surface=label_of_surface,
        visible_area=visible,
        in_frame_area=in_frame,
        factors=_factors(plan, in_frame, visible, first_frames, layer_of_id, fast_motion_px),
    )


def _areas(plan: ScenePlan) -> tuple[np.ndarray, np.ndarray]:
    """In-frame and visible pixels ``[T, L]`` of every layer in every frame."""
    num_layers, num_frames = len(plan.layers), plan.num_frames
    in_frame = np.zeros((num_frames, num_layers))
    visible = np.zeros((num_frames, num_layers))
    for t in range(num_frames):
        composition = compose(plan, t)
        for index, _, _, placed in composition.placements:
            in_frame[t, index] = np.count_nonzero(placed)
        visible[t] = np.bincount(composition.surface.ravel(), minlength=num_layers + 1)[1:]
    return in_frame, visible


def _identify_targets(
    plan: ScenePlan, visible: np.ndarray
) -> tuple[dict[int, int], dict[int, int], np.ndarray]:
    """Ids 1..O for the targets ever visible, in layer order (a target that never shows gets
    none): their first frames, their layers, and the surface-to-id lookup table."""
    first_frames: dict[int, int] = {}
    layer_of_id: dict[int, int] = {}
    label_of_surface = np.zeros(256, dtype=np.uint8)
    for index, layer in enumerate(plan.layers):
        seen = np.flatnonzero(visible[:, index] > 0)
        if layer.is_target and seen.size:
            object_id = len(first_frames) + 1
            first_frames[object_id] = int(seen[0])
            layer_of_id[object_id] = index
            label_of_surface[index + 1] = object_id
    return first_frames, layer_of_id, label_of_surface


def _factors(
    plan: ScenePlan,
    in_frame: np.ndarray,
    visible: np.ndarray,
    first_frames: dict[int, int],
    layer_of_id: dict[int, int],
    fast_motion_px: float,
) -> dict[str, bool]:
    """Each of FACTOR_NAMES (in that order): whether it happens."""
    layers, num_frames = plan.layers, plan.num_frames
    targets = list(layer_of_id.values())
    distractors = [i for i, layer in enumerate(layers) if not layer.is_target]
    full = np.stack([layer.unit_areas() * layer.radius**2 for layer in layers], axis=1)
    visible_share = visible / full
    in_frame_share = in_frame / full

    # a sliver at a frame edge is no occlusion, whatever its share
    occluded = (in_frame - visible >= OCCLUSION_LOSS * in_frame) & (in_frame >= 20)
    steps = np.zeros((num_frames, len(layers)))
    if num_frames > 1:
        centres = np.stack([layer.centre for layer in layers], axis=1)  # [T, L, 2]
        steps[1:] = np.linalg.norm(np.diff(centres, axis=0), axis=-1)
        # only moves between two frames in which the object is seen count
        steps[1:] *= (visible[1:] > 0) & (visible[:-1] > 0)
    return {
        "distractors": bool(
            distractors and (visible_share[:, distractors] >= DISTRACTOR_VISIBLE).any()
        ),
        "occlusion": bool(occluded[:, targets].any()),
        "fast_motion": bool((steps[:, targets] >= fast_motion_px).any()),
        "leaves_frame": any(
            leaves_and_returns(visible_share[:, i], in_frame_share[:, i]) for i in targets
        ),
        "late_objects": any(first > 0 for first in first_frames.values()),
    }


def leaves_and_returns(visible_share: np.ndarray, in_frame_share: np.ndarray) -> bool:
    """Well visible, then (almost) out of frame, then well visible again."""
    seen = visible_share >= WELL_VISIBLE
    for t in np.flatnonzero(in_frame_share < OUT_OF_FRAME):
        if seen[:t].any() and seen[t + 1 :].any():
            return True
    return False
