"""Small plane-geometry and colour helpers shared by the scene's modules."""

from __future__ import annotations

import colorsys
import math

import numpy as np


def rotation(angle: float) -> np.ndarray:
    """The 2x2 matrix that turns (x, y) by ``angle`` radians."""
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[cos, -sin], [sin, cos]])


def fold(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Reflect values into [low, high] (a bounce at the walls; identity inside the box)."""
    span = np.maximum(high - low, 1e-6)
    phase = np.mod(values - low, 2.0 * span)
    return low + span - np.abs(phase - span)


def polygon_area(points: np.ndarray) -> float:
    """Area of the polygon with vertices ``[V, 2]`` (shoelace formula)."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    """RGB float32 ``[3]`` in 0..255 of an HSV colour (the hue wraps around)."""
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), dtype=np.float32) * 255.0
