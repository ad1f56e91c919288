"""The camera: its pan (drawn by `staging`) and, in the realistic preset, a zoom about the
frame centre.

With a zoom ``z_t`` frame pixel ``p`` shows background point ``(p - c) / z_t + c + pan_t``
(``c`` the frame centre), and an object at pre-zoom position ``q`` appears at
``c + z_t (q - c)``, its radius times ``z_t``: `apply_zoom` folds this into the objects'
centres and radii once the motion is staged, so masks, factors and flow see the zoomed scene.
"""

from __future__ import annotations

import math

import numpy as np

from vos.data.synthetic.layers import ScenePlan


def draw_zoom(rng: np.random.Generator, time: np.ndarray, amount: float) -> np.ndarray:
    """Zoom ``[T]``: a slow push in or out by up to ``amount`` (relative) plus a gentle sway."""
    drift = rng.uniform(-1.0, 1.0) * amount
    sway = rng.uniform(0.0, 0.35) * amount
    period = rng.uniform(20.0, 60.0)
    phase = rng.uniform(0.0, 2.0 * np.pi)
    span = max(float(time[-1]), 1.0)
    log_zoom = drift * time / span + sway * (
        np.sin(2.0 * np.pi * time / period + phase) - math.sin(phase)
    )
    return np.exp(log_zoom)


def frame_centre(plan: ScenePlan) -> np.ndarray:
    return np.array([(plan.width - 1) / 2.0, (plan.height - 1) / 2.0])


def apply_zoom(plan: ScenePlan, zoom: np.ndarray) -> None:
    """Zoom the staged scene: objects scale about the frame centre, and the pan is shifted so
    that every frame's corners fall at background coordinates >= 1 (the background is drawn
    from 0 up)."""
    centre = frame_centre(plan)
    for layer in plan.layers:
        layer.centre = centre + zoom[:, None] * (layer.centre - centre)
        layer.radius = layer.radius * zoom
    corners = np.array([[0.0, 0.0], [plan.width - 1.0, plan.height - 1.0]])
    reach = (corners[None] - centre) / zoom[:, None, None] + centre + plan.pan[:, None]  # [T, 2, 2]
    plan.pan = plan.pan - reach.min(axis=(0, 1)) + 1.0
    plan.zoom = zoom


def to_background(plan: ScenePlan, points: np.ndarray, t: int) -> np.ndarray:
    """Background coordinates ``[N, 2]`` seen at frame-``t`` pixels ``points``."""
    if plan.zoom is None:
        return points + plan.pan[t]
    centre = frame_centre(plan)
    return (points - centre) / plan.zoom[t] + centre + plan.pan[t]


def from_background(plan: ScenePlan, points: np.ndarray, t: int) -> np.ndarray:
    """Frame-``t`` pixel positions of background coordinates ``points`` (inverse of
    `to_background`)."""
    if plan.zoom is None:
        return points - plan.pan[t]
    centre = frame_centre(plan)
    return (points - plan.pan[t] - centre) * plan.zoom[t] + centre


def background_affine(plan: ScenePlan, t: int) -> np.ndarray:
    """The 2x3 matrix of `to_background` at frame ``t`` (for cv2's inverse-map warps)."""
    zoom = 1.0 if plan.zoom is None else float(plan.zoom[t])
    shift = frame_centre(plan) * (1.0 - 1.0 / zoom) + plan.pan[t]
    return np.array([[1.0 / zoom, 0.0, shift[0]], [0.0, 1.0 / zoom, shift[1]]])


def background_extent(plan: ScenePlan) -> tuple[int, int]:
    """(width, height) of background the camera ever sees, plus a margin for sampling."""
    corners = np.array([[0.0, 0.0], [plan.width - 1.0, plan.height - 1.0]])
    far = np.max(
        [to_background(plan, corners, t).max(axis=0) for t in range(plan.num_frames)], axis=0
    )
    return int(math.ceil(far[0])) + 3, int(math.ceil(far[1])) + 3
