"""Where things go: the camera pan, each object's smooth path, and the factors staged on
purpose.

Ordinary motion is a slow drift plus a sum of sinusoids, reflected at the walls of a box that
keeps at least half of an object in frame. On top of it a video may stage:

- a fast one-frame jump of a target (well above the fast-motion threshold),
- an exit of a target through its nearest frame edge and back, smoothly (well below it),
- an occlusion: another object routed over a target's centre, in front of it (with
  ``distractor_crossing``, a look-alike of that target when the video has one),
- a late object: a target that spawns at a free spot of a later frame.

Staging only wishes; `factors` measures what really happened.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from vos.data.synthetic.geometry import fold
from vos.data.synthetic.layers import Layer, ScenePlan


@dataclass(frozen=True)
class Pace:
    """The speeds motion is measured against."""

    short_side: float  # min(height, width) in pixels
    speed_unit: float  # scale of an ordinary drift, pixels per frame
    motion_speed: float  # multiplies the amplitude of the sinusoidal wiggle
    fast_motion_px: float  # per-frame displacement that counts as fast motion


def draw_pan(
    rng: np.random.Generator, time: np.ndarray, short_side: float, pan_speed: float
) -> np.ndarray:
    """Camera offset ``[T, 2]``: frame pixel p shows background point p + offset."""
    speed = rng.uniform(0.0, 0.012) * short_side * pan_speed
    direction = rng.uniform(0.0, 2.0 * np.pi)
    offset = np.outer(time, [speed * math.cos(direction), speed * math.sin(direction)])
    for axis in range(2):
        amplitude = rng.uniform(0.0, 3.0) * pan_speed
        period = rng.uniform(20.0, 60.0)
        offset[:, axis] += amplitude * np.sin(
            2.0 * np.pi * time / period + rng.uniform(0.0, 2.0 * np.pi)
        )
    return offset - offset.min(axis=0) + 1.0  # one pixel of margin for bilinear sampling


def plan_motion(
    rng: np.random.Generator,
    plan: ScenePlan,
    pace: Pace,
    staged: Mapping[str, bool],
    distractor_crossing: bool = False,
) -> None:
    """Draw the trajectories of ``plan``'s layers and stage the wished factors. Videos that do
    not stage an occlusion are re-drawn a few times to keep the objects' bounding circles
    apart; the attempt with the fewest overlaps is kept."""
    attempts = 1 if staged["occlusion"] else 10
    best: tuple[int, list[np.ndarray], list[int]] | None = None
    for _ in range(attempts):
        _stage_all(rng, plan, pace, staged, distractor_crossing)
        overlaps = circle_overlaps(plan.layers)
        if best is None or overlaps < best[0]:
            best = (
                overlaps,
                [layer.centre.copy() for layer in plan.layers],
                [layer.start for layer in plan.layers],
            )
        if overlaps == 0:
            break
    assert best is not None
    for layer, centre, start in zip(plan.layers, best[1], best[2]):
        layer.centre, layer.start = centre, start


def late_targets(layers: list[Layer], staged: Mapping[str, bool]) -> list[int]:
    """The layers that spawn late: the last target, when late objects are staged and another
    target is there to hold frame 0."""
    targets = [i for i, layer in enumerate(layers) if layer.is_target]
    num_late = int(staged["late_objects"] and len(targets) >= 2)
    return targets[len(targets) - num_late :] if num_late else []


def _stage_all(
    rng: np.random.Generator,
    plan: ScenePlan,
    pace: Pace,
    staged: Mapping[str, bool],
    distractor_crossing: bool,
) -> None:
    """One attempt: place every layer, then stage the factors in an order that keeps each
    from undoing another."""
    num_frames, layers = plan.num_frames, plan.layers
    targets = [i for i, layer in enumerate(layers) if layer.is_target]
    late = late_targets(layers, staged)
    on_time = [i for i in range(len(layers)) if i not in late]
    for layer in layers:  # forget the previous attempt: nothing is placed yet
        layer.centre = np.zeros((0, 2))
        layer.start = num_frames

    # frame-0 objects start spread out, so the first masks are mostly unoccluded
    for index in rng.permutation(on_time):
        layer = layers[int(index)]
        layer.start = 0
        anchor = free_spot(rng, plan, layer, 0, exclude=int(index))
        layer.centre = wander(rng, plan, pace, layer, anchor, 0)

    on_time_targets = [i for i in targets if i not in late]
    occluder = victim = None
    if staged["occlusion"] and num_frames >= 4:
        victim = int(rng.choice(on_time_targets))
        candidates = [i for i in on_time if i != victim]
        lookalikes = [i for i in candidates if layers[i].model in on_time_targets]
        if distractor_crossing and lookalikes:
            # a look-alike crosses in front of the target it imitates
            occluder = int(rng.choice(lookalikes))
            victim = int(layers[occluder].model)
        elif candidates:
            occluder = int(rng.choice(candidates))
    movers = [i for i in on_time_targets if i != occluder]
    # the jump comes first: it reflects the rest of the path into the box, which would undo
    # an exit staged before it
    jump = None
    if staged["fast_motion"] and movers and num_frames >= 4:
        jumper = int(rng.choice(movers))
        jump = (jumper, stage_jump(rng, plan, pace, jumper, staged["leaves_frame"]))
    exit_window = None
    leaver = None
    if staged["leaves_frame"] and movers and num_frames >= 12:
        # another target than the victim and the jumper where there is one
        busy = {victim, jump[0] if jump else None}
        leaver = int(rng.choice([i for i in movers if i not in busy] or movers))
        jump_frame = jump[1] if jump is not None and jump[0] == leaver else None
        exit_window = stage_exit(rng, plan, pace, leaver, jump_frame)
    if occluder is not None and victim is not None:
        window = exit_window if victim == leaver else None
        stage_occlusion(rng, plan, pace, occluder, victim, window)
    for index in late:
        stage_late(rng, plan, pace, index)


def wander(
    rng: np.random.Generator,
    plan: ScenePlan,
    pace: Pace,
    layer: Layer,
    anchor: np.ndarray,
    anchor_frame: int,
) -> np.ndarray:
    """A smooth path ``[T, 2]`` through ``anchor`` at ``anchor_frame``: drift plus sinusoids,
    reflected into the layer's box (the anchor is kept when it lies in the box)."""
    time = plan.time
    direction = rng.uniform(0.0, 2.0 * np.pi)
    speed = rng.uniform(0.3, 1.0) * pace.speed_unit
    drift = speed * np.array([math.cos(direction), math.sin(direction)])
    wiggle = np.zeros((plan.num_frames, 2))
    for axis, size in enumerate((plan.width, plan.height)):
        for _ in range(2):
            amplitude = rng.uniform(0.008, 0.025) * size * pace.motion_speed
            period = rng.uniform(18.0, 50.0)
            phase = rng.uniform(0.0, 2.0 * np.pi)
            wiggle[:, axis] += amplitude * np.sin(2.0 * np.pi * time / period + phase)
    relative_time = (time - anchor_frame)[:, None]
    path = anchor + drift * relative_time + wiggle - wiggle[anchor_frame]
    return fold(path, *layer.box(plan.width, plan.height))


def free_spot(
    rng: np.random.Generator, plan: ScenePlan, layer: Layer, frame: int, exclude: int
) -> np.ndarray:
    """The candidate centre (of 32) in the layer's box farthest from the objects that exist at
    ``frame``, other than layer ``exclude``."""
    low, high = layer.box(plan.width, plan.height)
    candidates = rng.uniform(low, high, size=(32, 2))
    others = [
        other
        for i, other in enumerate(plan.layers)
        if i != exclude and other.start <= frame and len(other.centre) > 0
    ]
    if not others:
        return candidates[0]
    centres = np.stack([other.centre[frame] for other in others])
    radii = np.array([other.radius[frame] for other in others])
    gaps = np.linalg.norm(candidates[:, None] - centres[None], axis=-1) - radii[None]
    clearance = gaps.min(axis=1) - layer.radius[frame]
    return candidates[int(np.argmax(clearance))]


def stage_exit(
    rng: np.random.Generator, plan: ScenePlan, pace: Pace, index: int, jump_frame: int | None
) -> tuple[int, int] | None:
    """Send layer ``index`` out through its nearest frame edge and back, smoothly and slower
    than the fast-motion threshold, away from its jump. Returns (first frame of the excursion,
    first frame back on its path), or None when no excursion fits in the video."""
    layer = plan.layers[index]
    num_frames, width, height = plan.num_frames, plan.width, plan.height
    speed_limit = 0.5 * pace.fast_motion_px
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
                (1.0, 0.0): np.max(width - x + radius),
                (0.0, -1.0): np.max(y + radius),
                (0.0, 1.0): np.max(height - y + radius),
            }
            direction, distance = min(needs.items(), key=lambda item: item[1])
            distance += 2.0
            if 0.5 * np.pi * distance / ramp > speed_limit:
                continue
            t = plan.time
            rise = np.sin(0.5 * np.pi * np.clip((t - begin) / ramp, 0.0, 1.0)) ** 2
            fall = np.sin(0.5 * np.pi * np.clip((end - t) / ramp, 0.0, 1.0)) ** 2
            excursion = np.minimum(rise, fall) * distance
            layer.centre = layer.centre + excursion[:, None] * np.array(direction)
            return begin, end
    return None


def stage_jump(
    rng: np.random.Generator, plan: ScenePlan, pace: Pace, index: int, keep_middle_free: bool
) -> int | None:
    """One abrupt displacement of layer ``index`` (well above the fast-motion threshold) at a
    random frame, in the outer quarters of the video when ``keep_middle_free`` (an exit may
    need the middle); returns that frame (None if no jump fits in the box)."""
    layer = plan.layers[index]
    num_frames = plan.num_frames
    frames = np.arange(2, num_frames - 1)
    if keep_middle_free:
        outer = frames[(frames < num_frames // 4) | (frames > (3 * num_frames) // 4)]
        frames = outer if outer.size else frames
    frame = int(rng.choice(frames))
    low, high = layer.box(plan.width, plan.height)
    position = layer.centre[frame]
    magnitude = rng.uniform(0.3, 0.42) * pace.short_side
    while magnitude >= 1.4 * pace.fast_motion_px:
        angles = rng.uniform(0.0, 2.0 * np.pi, 16)
        jumps = magnitude * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        inside = np.all((position + jumps >= low) & (position + jumps <= high), axis=1)
        if inside.any():
            jump = jumps[int(np.argmax(inside))]
            layer.centre[frame:] = fold(layer.centre[frame:] + jump, low, high)
            return frame
        magnitude *= 0.85
    return None


def stage_occlusion(
    rng: np.random.Generator,
    plan: ScenePlan,
    pace: Pace,
    occluder: int,
    victim: int,
    exit_window: tuple[int, int] | None,
) -> None:
    """Route layer ``occluder`` over the centre of layer ``victim`` at some middle frame
    (outside the victim's exit, if any), and paint it in front of the victim."""
    num_frames = plan.num_frames

    def allowed(t: int) -> bool:
        return exit_window is None or not exit_window[0] - 2 <= t <= exit_window[1] + 2

    frames = [t for t in range(num_frames // 4, (3 * num_frames) // 4 + 1) if allowed(t)]
    frames = frames or [t for t in range(1, num_frames - 1) if allowed(t)]
    if not frames:
        return
    frame = int(rng.choice(frames))
    layer, target = plan.layers[occluder], plan.layers[victim]
    low, high = layer.box(plan.width, plan.height)
    meeting = target.centre[frame] + rng.uniform(-0.25, 0.25, 2) * target.radius[frame]
    meeting = np.clip(meeting, low, high)
    # of a few paths through the meeting point, the one that starts farthest from the rest
    others = [other for i, other in enumerate(plan.layers) if i != occluder and other.start == 0]
    best_path, best_clearance = None, -np.inf
    for _ in range(6):
        path = wander(rng, plan, pace, layer, meeting, frame)
        clearance = min(
            (
                float(np.linalg.norm(path[0] - other.centre[0])) - other.radius[0] - layer.radius[0]
                for other in others
            ),
            default=0.0,
        )
        if clearance > best_clearance:
            best_path, best_clearance = path, clearance
    layer.centre = best_path
    order = plan.depth_order
    if order.index(occluder) < order.index(victim):
        a, b = order.index(occluder), order.index(victim)
        order[a], order[b] = order[b], order[a]


def stage_late(rng: np.random.Generator, plan: ScenePlan, pace: Pace, index: int) -> None:
    """Spawn layer ``index`` at a free spot of a later frame (it does not exist before)."""
    layer = plan.layers[index]
    num_frames = plan.num_frames
    earliest = max(1, round(0.15 * num_frames))
    latest = max(earliest, min(round(0.6 * num_frames), num_frames - 2))
    frame = int(rng.integers(earliest, latest + 1))
    if frame >= num_frames:
        frame = num_frames - 1
    layer.start = num_frames  # keep it out of its own clearance test
    anchor = free_spot(rng, plan, layer, frame, exclude=index)
    layer.centre = wander(rng, plan, pace, layer, anchor, frame)
    layer.start = frame


def circle_overlaps(layers: list[Layer]) -> int:
    """How many (frame, pair with a target) have overlapping bounding circles."""
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
