"""Exact optical flow between any two frames of a scene.

The flow from frame t to a reference frame is, at each pixel, where the surface seen there in
frame t is in the reference frame, occluded or out of frame there or not: for an object, its
frame-t placement is inverted and the reference frame's placement applied (through the
object's deformation, when it has one); for the background it is the difference of the camera
offsets (and zooms). Training clips that skip or run backwards get the
flow between their actual frames this way.
"""

from __future__ import annotations

import numpy as np

from vos.data.synthetic.camera import from_background, to_background
from vos.data.synthetic.composition import Composition, unit_coordinates
from vos.data.synthetic.geometry import rotation
from vos.data.synthetic.layers import ScenePlan


def exact_flow(plan: ScenePlan, composition: Composition, t: int, reference: int) -> np.ndarray:
    """Flow ``float32 [2, H, W]`` (u, v) from frame ``t`` (whose silhouettes are
    ``composition``) to frame ``reference``; zeros when ``reference == t``."""
    flow = np.zeros((2, plan.height, plan.width), dtype=np.float32)
    if reference == t:
        return flow
    if plan.zoom is None:
        pan_step = plan.pan[t] - plan.pan[reference]
        flow[0] = pan_step[0]
        flow[1] = pan_step[1]
    else:
        ys, xs = np.mgrid[0 : plan.height, 0 : plan.width]
        pixels = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
        moved = from_background(plan, to_background(plan, pixels, t), reference)
        flow[:] = (moved - pixels).T.reshape(2, plan.height, plan.width)
    for index, y0, x0, placed in composition.placements:
        height, width = placed.shape
        region = composition.surface[y0 : y0 + height, x0 : x0 + width] == index + 1
        if not region.any():
            continue
        rows, cols = np.nonzero(region)
        points = np.stack([cols + x0, rows + y0], axis=1).astype(np.float64)
        layer = plan.layers[index]
        if layer.deformation is None:
            # undo the frame-t placement, apply the reference one: p' = B (p - c_t) + c_ref
            step = rotation(layer.angle[reference] - layer.angle[t]) * (
                layer.radius[reference] / layer.radius[t]
            )
            moved = (points - layer.centre[t]) @ step.T + layer.centre[reference]
        else:
            unit = unit_coordinates(plan, composition, index, y0, x0, placed)
            moved = layer.to_frame(unit[rows, cols], reference)
        displacement = (moved - points).astype(np.float32)
        flow[0, rows + y0, cols + x0] = displacement[:, 0]
        flow[1, rows + y0, cols + x0] = displacement[:, 1]
    return flow
