"""Which object is on top at each pixel of a frame: every layer's silhouette rasterised at its
frame-t placement and painted back to front.

This is the geometry shared by masks, rendering, flow and the factor measurement; there are no
colours here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from vos.data.synthetic.layers import ScenePlan

_SUBPIXEL_BITS = 4  # fixed-point vertices for cv2.fillPoly: 1/16 pixel


@dataclass
class Composition:
    """The visible surface of one frame: which layer is on top at each pixel."""

    surface: np.ndarray  # uint8 [H, W]: 0 background, 1 + layer index otherwise
    # (layer index, y0, x0, silhouette) in back-to-front order; silhouette is bool [h, w]
    placements: list[tuple[int, int, int, np.ndarray]]
    frame: int  # the frame these silhouettes are placed at
    # layer index -> rest-pose unit coordinates [h, w, 2] of a deformed layer's silhouette
    # pixels, filled by `unit_coordinates` on first use
    _unit_coordinates: dict[int, np.ndarray] = field(default_factory=dict, repr=False)


def unit_coordinates(
    plan: ScenePlan, composition: Composition, index: int, y0: int, x0: int, placed: np.ndarray
) -> np.ndarray:
    """``float64 [h, w, 2]``: the rest-pose unit coordinates of each silhouette pixel of the
    placement ``(index, y0, x0, placed)`` of ``composition`` (zeros off the silhouette).
    Inverting a deformation is the costly part of a frame; its pixels and its flow need the
    same inverse, so it is computed once per frame and layer."""
    cached = composition._unit_coordinates.get(index)
    if cached is None:
        rows, cols = np.nonzero(placed)
        pixels = np.stack([cols + x0, rows + y0], axis=1).astype(np.float64)
        cached = np.zeros((*placed.shape, 2), dtype=np.float64)
        cached[rows, cols] = plan.layers[index].to_unit(pixels, composition.frame)
        composition._unit_coordinates[index] = cached
    return cached


def place(plan: ScenePlan, index: int, t: int) -> tuple[int, int, np.ndarray] | None:
    """Rasterise layer ``index`` at frame ``t``: (y0, x0, bool silhouette) of its in-frame
    part, or None when it does not exist yet or is out of frame."""
    layer = plan.layers[index]
    if t < layer.start:
        return None
    corners = layer.to_frame(layer.polygon, t)
    x0 = max(int(math.floor(corners[:, 0].min())), 0)
    y0 = max(int(math.floor(corners[:, 1].min())), 0)
    x1 = min(int(math.ceil(corners[:, 0].max())) + 1, plan.width)
    y1 = min(int(math.ceil(corners[:, 1].max())) + 1, plan.height)
    if x0 >= x1 or y0 >= y1:
        return None
    fixed = np.round((corners - (x0, y0)) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    canvas = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    cv2.fillPoly(canvas, [fixed.reshape(-1, 1, 2)], 1, cv2.LINE_8, _SUBPIXEL_BITS)
    if not canvas.any():
        return None
    return y0, x0, canvas.view(bool)


def compose(plan: ScenePlan, t: int) -> Composition:
    """Paint the silhouettes of frame ``t`` back to front."""
    surface = np.zeros((plan.height, plan.width), dtype=np.uint8)
    placements = []
    for index in plan.depth_order:
        placed = place(plan, index, t)
        if placed is None:
            continue
        y0, x0, silhouette = placed
        height, width = silhouette.shape
        surface[y0 : y0 + height, x0 : x0 + width][silhouette] = index + 1
        placements.append((index, y0, x0, silhouette))
    return Composition(surface, placements, frame=t)
