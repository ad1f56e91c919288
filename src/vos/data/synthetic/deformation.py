"""Non-rigid objects: organic outlines, limbs that swing at their joints, and a smooth
deformation of the whole body over time — each an explicit map of the object's unit
coordinates, so masks, texture and flow stay exact.

A deformed object's frame-t point of unit coordinate ``u`` (its rest pose) is
``centre_t + radius_t * R(angle_t) * D_t(u)`` with ``D_t = wobble_t o skin_t``:

- ``skin_t`` (articulation, linear blend skinning): each limb turns by ``swing_t`` about its
  joint; a point's share of that turn rises smoothly from 0 to 1 across the joint;
- ``wobble_t`` (non-rigid body motion): a sum of a few low-frequency sine waves, each pushing
  points along its own direction by a time-varying amplitude.

Both are kept well inside the range where they are one-to-one (joint blends wider than the
swing bends, wave gradients summing below one half), so ``D_t`` is inverted by Newton's method
to 1e-6 unit coordinates (`inverse`): the flow of a pixel is ``D_ref(D_t^-1(u'))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

_RASTER = 512  # canvas side for the union of body and limbs
_OUTLINE_VERTICES = 160
_NEWTON_STEPS = 12
# Blend widths of a limb's turn, unit coordinates: across the joint, and sideways beyond the
# limb's half width. With swings up to MAX_SWING radians the skinning cannot fold (its Jacobian
# determinant is 1 - swing * smoothstep' * offset, offsets bounded by the blends).
_BLEND = 0.3
_SIDE_BLEND = 0.4
MAX_SWING = 0.3


@dataclass(frozen=True)
class Limb:
    """One limb of an articulated outline, in rest-pose unit coordinates."""

    joint: np.ndarray  # [2] the point it turns about
    direction: np.ndarray  # [2] unit vector from the joint along the limb
    reach: float  # half width of the part that turns whole
    swing: np.ndarray  # [T] turn in radians at each frame


@dataclass(frozen=True)
class Deformation:
    """``D_t``: limbs turning at their joints, then a few moving sine waves (see the module)."""

    limbs: tuple[Limb, ...]
    wave_frequency: np.ndarray  # [K, 2] radians per unit coordinate
    wave_phase: np.ndarray  # [K]
    wave_direction: np.ndarray  # [K, 2] unit vectors
    wave_amplitude: np.ndarray  # [T, K] unit coordinates

    def forward(self, points: np.ndarray, t: int) -> np.ndarray:
        """``D_t`` of rest-pose unit coordinates ``[N, 2]``."""
        return self._wobble(self._skin(points, t), t)

    def inverse(self, points: np.ndarray, t: int) -> np.ndarray:
        """``D_t^-1`` of deformed unit coordinates ``[N, 2]`` (Newton's method per stage)."""
        unwobbled = _newton(lambda u: self._wobble(u, t), points)
        return _newton(lambda u: self._skin(u, t), unwobbled)

    def _skin(self, points: np.ndarray, t: int) -> np.ndarray:
        moved = points
        for limb in self.limbs:
            relative = points - limb.joint
            along = relative @ limb.direction
            across = np.abs(relative @ np.array([-limb.direction[1], limb.direction[0]]))
            # the limb and the flesh beside its root turn; the turn fades across the joint and
            # away from the limb's axis
            share = _smoothstep(along / _BLEND + 0.5) * _smoothstep(
                (limb.reach - across) / _SIDE_BLEND + 1.0
            )
            angle = float(limb.swing[t]) * share
            cos, sin = np.cos(angle) - 1.0, np.sin(angle)
            moved = moved + np.stack(
                [
                    cos * relative[:, 0] - sin * relative[:, 1],
                    sin * relative[:, 0] + cos * relative[:, 1],
                ],
                axis=1,
            )
        return moved

    def _wobble(self, points: np.ndarray, t: int) -> np.ndarray:
        if not len(self.wave_phase):
            return points
        waves = np.sin(points @ self.wave_frequency.T + self.wave_phase)  # [N, K]
        return points + (waves * self.wave_amplitude[t]) @ self.wave_direction


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _newton(function, target: np.ndarray) -> np.ndarray:
    """Solve ``function(u) = target`` row by row, from ``u = target`` (the maps are near the
    identity), with a finite-difference Jacobian."""
    u = target.copy()
    step = 1e-5
    for _ in range(_NEWTON_STEPS):
        value = function(u)
        residual = value - target
        if np.abs(residual).max(initial=0.0) < 1e-9:
            break
        d_x = (function(u + [step, 0.0]) - value) / step
        d_y = (function(u + [0.0, step]) - value) / step
        a, b, c, d = d_x[:, 0], d_y[:, 0], d_x[:, 1], d_y[:, 1]
        determinant = a * d - b * c
        determinant = np.where(np.abs(determinant) < 1e-6, 1e-6, determinant)
        u = (
            u
            - np.stack(
                [
                    (d * residual[:, 0] - b * residual[:, 1]),
                    (-c * residual[:, 0] + a * residual[:, 1]),
                ],
                axis=1,
            )
            / determinant[:, None]
        )
    return u


def organic_outline(
    rng: np.random.Generator, time: np.ndarray, *, articulated: bool, swing: float, wobble: float
) -> tuple[np.ndarray, Deformation]:
    """A smooth random outline ``[V, 2]`` (farthest vertex at radius 1) and its deformation
    over ``time``. Articulated outlines are a body with 2-4 limbs that swing by up to
    ``swing`` radians; ``wobble`` is the largest wave amplitude in unit coordinates."""
    if not 0.0 <= swing <= MAX_SWING:
        raise ValueError(f"limb swing must lie in [0, {MAX_SWING}] radians; got {swing}")
    angles = np.linspace(0.0, 2.0 * np.pi, 256, endpoint=False)
    body_radius = 1.0 if not articulated else rng.uniform(0.45, 0.6)
    radii = np.ones_like(angles)
    for harmonic in range(2, 6):
        strength = rng.uniform(0.02, 0.16) / (harmonic - 0.5)
        radii += strength * np.cos(harmonic * angles + rng.uniform(0.0, 2.0 * np.pi))
    elongation = rng.uniform(0.6, 1.0)
    body = np.stack([np.cos(angles), elongation * np.sin(angles)], axis=1) * radii[:, None]
    body *= body_radius / np.linalg.norm(body, axis=1).max()

    canvas = np.zeros((_RASTER, _RASTER), np.uint8)
    scale = _RASTER / 4.0  # unit coordinates -2..2 on the canvas

    def fill(polygon: np.ndarray) -> None:
        pixels = np.round((polygon + 2.0) * scale * 16).astype(np.int32)
        cv2.fillPoly(canvas, [pixels.reshape(-1, 1, 2)], 1, cv2.LINE_8, 4)

    fill(body)
    limbs: list[Limb] = []
    if articulated:
        count = int(rng.integers(2, 5))
        spread = rng.uniform(-0.12, 0.12, count) * (2.0 * np.pi / count)
        first = rng.uniform(0.0, 2.0 * np.pi)
        for index in range(count):
            angle = first + index * 2.0 * np.pi / count + spread[index]
            direction = np.array([math.cos(angle), math.sin(angle)])
            reach = _reach(body, direction)
            joint = 0.8 * reach * direction
            length = rng.uniform(0.4, 0.65)
            half_width = rng.uniform(0.11, 0.17)
            fill(_capsule(joint - 0.1 * direction, joint + length * direction, half_width))
            period = rng.uniform(10.0, 30.0)
            amplitude = rng.uniform(0.35, 1.0) * swing
            turn = amplitude * np.sin(2.0 * np.pi * time / period + rng.uniform(0.0, 2.0 * np.pi))
            limbs.append(
                Limb(joint=joint, direction=direction, reach=half_width + 0.03, swing=turn)
            )
    contours, _ = cv2.findContours(canvas, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float64)
    picks = np.linspace(0, len(contour), _OUTLINE_VERTICES, endpoint=False).astype(int)
    outline = (contour[picks] + 0.5) / scale - 2.0
    # a circular [1, 4, 6, 4, 1] filter smooths the raster's staircase
    outline = sum(
        weight * np.roll(outline, shift, axis=0)
        for shift, weight in zip(range(-2, 3), (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16))
    )
    norm = np.linalg.norm(outline, axis=1).max()
    outline /= norm
    limbs = [
        Limb(limb.joint / norm, limb.direction, limb.reach / norm, limb.swing) for limb in limbs
    ]

    count = 3
    frequency_angle = rng.uniform(0.0, 2.0 * np.pi, count)
    frequency = rng.uniform(1.5, 3.0, count)[:, None] * np.stack(
        [np.cos(frequency_angle), np.sin(frequency_angle)], axis=1
    )
    direction_angle = rng.uniform(0.0, 2.0 * np.pi, count)
    directions = np.stack([np.cos(direction_angle), np.sin(direction_angle)], axis=1)
    periods = rng.uniform(12.0, 40.0, count)
    amplitude = rng.uniform(0.4, 1.0, count) * wobble / count * 1.5
    phases = rng.uniform(0.0, 2.0 * np.pi, count)
    wave_amplitude = amplitude * np.sin(2.0 * np.pi * time[:, None] / periods + phases)
    deformation = Deformation(
        limbs=tuple(limbs),
        wave_frequency=frequency,
        wave_phase=rng.uniform(0.0, 2.0 * np.pi, count),
        wave_direction=directions,
        wave_amplitude=wave_amplitude,
    )
    return outline, deformation


def _reach(outline: np.ndarray, direction: np.ndarray) -> float:
    """Distance from the origin to the outline along ``direction`` (nearest vertex in angle)."""
    cosines = outline @ direction / np.linalg.norm(outline, axis=1)
    return float(np.linalg.norm(outline[int(np.argmax(cosines))]))


def _capsule(start: np.ndarray, end: np.ndarray, half_width: float) -> np.ndarray:
    """Polygon of a stadium from ``start`` to ``end``."""
    axis = end - start
    angle = math.atan2(axis[1], axis[0])
    arc = np.linspace(-np.pi / 2, np.pi / 2, 12)
    tip = end + half_width * np.stack([np.cos(angle + arc), np.sin(angle + arc)], axis=1)
    base = start + half_width * np.stack(
        [np.cos(angle + np.pi + arc), np.sin(angle + np.pi + arc)], axis=1
    )
    return np.concatenate([tip, base])
