"""The data a scene is drawn into: each object's look and trajectory (`Layer`) and the
arrangement of the whole video over time (`ScenePlan`).

Casting and staging fill these in when a scene is built; composition, rendering, flow and the
factor measurement only read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from vos.data.synthetic.deformation import Deformation
from vos.data.synthetic.geometry import polygon_area, rotation


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
    model: int | None = None  # a distractor: the index of the target it looks like
    deformation: Deformation | None = None  # non-rigid objects: D_t of their unit coordinates
    photo: str | None = None  # texture "photo": the photo its sprite is cut from

    @cached_property
    def unit_area(self) -> float:
        """Area of the rest outline in unit coordinates."""
        return polygon_area(self.polygon)

    def unit_areas(self) -> np.ndarray:
        """Area ``[T]`` of the outline in unit coordinates at each frame (it changes when the
        object deforms)."""
        if self.deformation is None:
            return np.full(len(self.radius), self.unit_area)
        return np.array(
            [
                polygon_area(self.deformation.forward(self.polygon, t))
                for t in range(len(self.radius))
            ]
        )

    def to_frame(self, points: np.ndarray, t: int) -> np.ndarray:
        """Frame-``t`` pixel positions ``[N, 2]`` (x, y) of rest-pose unit coordinates."""
        shaped = points if self.deformation is None else self.deformation.forward(points, t)
        return shaped @ (self.radius[t] * rotation(self.angle[t])).T + self.centre[t]

    def to_unit(self, points: np.ndarray, t: int) -> np.ndarray:
        """Rest-pose unit coordinates ``[N, 2]`` of frame-``t`` pixel positions (the inverse of
        `to_frame`)."""
        shaped = (points - self.centre[t]) @ rotation(self.angle[t]) / self.radius[t]
        return shaped if self.deformation is None else self.deformation.inverse(shaped, t)

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
    # [T] camera zoom about the frame centre c (None: no zoom); frame pixel p then shows
    # background point (p - c) / zoom + c + offset. Objects' centres and radii include it.
    zoom: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return len(self.time)
