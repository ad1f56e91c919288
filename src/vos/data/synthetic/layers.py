"""The data a scene is drawn into: each object's look and trajectory (`Layer`) and the
arrangement of the whole video over time (`ScenePlan`).

Casting and staging fill these in when a scene is built; composition, rendering, flow and the
factor measurement only read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from vos.data.synthetic.geometry import polygon_area


@dataclass
class Layer:
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
        return polygon_area(self.polygon)

    def box(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Where its centre may wander: at least about half of it stays in frame."""
        margin = 0.5 * float(self.radius.max())
        low = np.array([margin, margin])
        high = np.maximum(np.array([width - margin, height - margin]), low + 1.0)
        return low, high


@dataclass
class ScenePlan:
    """Everything a frame is made of but its colours: the layers with their trajectories, the
    order they are painted in and the camera pan, over all frames."""

    height: int
    width: int
    time: np.ndarray  # [T] frame numbers as floats: the clock of every trajectory
    layers: list[Layer]
    depth_order: list[int]  # layer indices, back to front
    pan: np.ndarray  # [T, 2] camera offset: frame pixel p shows background point p + offset

    @property
    def num_frames(self) -> int:
        return len(self.time)
