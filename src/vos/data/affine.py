"""Random affine copies of one image: static-image pre-training clips (STM §3.3, HMMN §4.1,
LCM §3.5, RMNet's pre-training) and the exact flow between the copies.

A copy is the image warped by A_t (2×3, original pixel -> copy pixel; rotation, shear, zoom
and translation about the image centre); masks are warped with nearest sampling, void (255)
outside the source image. The flow from copy t to copy r maps each pixel p of copy t to
A_r A_t⁻¹ p, the same scene point in copy r (exact: the scene is one plane).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np


def random_affine(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    rotation: float = 20.0,
    shear: float = 10.0,
    zoom: Sequence[float] = (0.9, 1.1),
    translation: float = 0.1,
) -> np.ndarray:
    """A 3×3 matrix (last row 0 0 1): degrees of rotation and shear drawn in ±range, zoom in
    ``zoom``, translation up to ``translation`` of the size, about the image centre."""
    angle = math.radians(rng.uniform(-rotation, rotation))
    shear_angle = math.radians(rng.uniform(-shear, shear))
    scale = rng.uniform(zoom[0], zoom[1])
    shift = rng.uniform(-translation, translation, size=2) * np.array([width, height])
    centre = np.array([[1, 0, width / 2], [0, 1, height / 2], [0, 0, 1]])
    to_origin = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1]])
    rotate = np.array(
        [[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]]
    )
    shear_m = np.array([[1, math.tan(shear_angle), 0], [0, 1, 0], [0, 0, 1]])
    zoom_m = np.diag([scale, scale, 1.0])
    move = np.array([[1, 0, shift[0]], [0, 1, shift[1]], [0, 0, 1]])
    return move @ centre @ rotate @ shear_m @ zoom_m @ to_origin


def warp_image(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    return cv2.warpAffine(
        image, matrix[:2], (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )


def warp_mask(mask: np.ndarray, matrix: np.ndarray, outside: int = 255) -> np.ndarray:
    height, width = mask.shape
    return cv2.warpAffine(
        mask,
        matrix[:2],
        (width, height),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=outside,
    )


def affine_flow(target: np.ndarray, reference: np.ndarray, height: int, width: int) -> np.ndarray:
    """``float32 [2, H, W]``: flow from the copy made by ``target`` to the one made by
    ``reference`` (3×3 matrices), where each target pixel's scene point is in the reference."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    moved = reference @ np.linalg.inv(target) @ points
    flow = (moved[:2] - points[:2]).reshape(2, height, width)
    return flow.astype(np.float32)
