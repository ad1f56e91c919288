"""Colours: the background world the camera pans over, each layer's textured sprite, and a
frame painted from them.

The background is a smooth random field of muted colours with stripes, soft blobs or speckle,
plus fine noise, larger than the frame, or (realistic preset) a crop of a photo. An object's
texture (noisy solid colour, stripes, checker, dots, rings, or a crop of a photo) is drawn once
in its own unit coordinates, so the texture moves, turns, scales and deforms with it; a frame
warps each sprite onto its layer's visible silhouette.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from vos.data.synthetic.camera import background_affine, background_extent
from vos.data.synthetic.composition import Composition, unit_coordinates
from vos.data.synthetic.geometry import hsv, rotation
from vos.data.synthetic.layers import Layer, ScenePlan
from vos.data.synthetic.photos import GREY_PHOTOS, load_photo

BACKGROUND_STYLES: tuple[str, ...] = ("stripes", "blobs", "speckle")

_SPRITE_MARGIN = 1.15  # sprites cover the unit disc with a margin for bilinear sampling


@dataclass(frozen=True)
class Background:
    """The look of a scene's background: its pattern style and base hue, or a photo."""

    style: str
    hue: float
    photo: str | None = None  # a photo replaces the pattern

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Background:
        style = str(rng.choice(BACKGROUND_STYLES))
        return cls(style=style, hue=float(rng.random()))


class Painter:
    """The pixels of one scene. The background world and the sprites are made on first use,
    each from its own random stream of the scene's seed: building a scene (to measure it)
    stays cheap, and the order frames are read in cannot change them."""

    def __init__(self, seed: int, plan: ScenePlan, background: Background) -> None:
        self.seed = seed
        self.plan = plan
        self.background = background

    def paint(self, t: int, composition: Composition) -> np.ndarray:
        """RGB ``uint8 [H, W, 3]`` of frame ``t``, whose silhouettes are ``composition``."""
        plan = self.plan
        frame = cv2.warpAffine(
            self.world,
            background_affine(plan, t),
            (plan.width, plan.height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )
        for index, y0, x0, placed in composition.placements:
            layer = plan.layers[index]
            sprite, pixels_per_unit = self.sprites[index]
            centre_px = (sprite.shape[0] - 1) / 2.0
            height, width = placed.shape
            if layer.deformation is None:
                # frame pixel -> sprite pixel: undo the placement, then scale into the sprite
                linear = rotation(-layer.angle[t]) * (pixels_per_unit / layer.radius[t])
                shift = (
                    linear @ (np.array([x0, y0], dtype=np.float64) - layer.centre[t]) + centre_px
                )
                patch = cv2.warpAffine(
                    sprite,
                    np.hstack([linear, shift[:, None]]),
                    (width, height),
                    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                    borderMode=cv2.BORDER_REPLICATE,
                )
            else:
                # a deformed object: each silhouette pixel's rest-pose unit coordinates
                unit = unit_coordinates(plan, composition, index, y0, x0, placed)
                sprite_xy = (unit * pixels_per_unit + centre_px).astype(np.float32)
                patch = cv2.remap(
                    sprite, sprite_xy, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
                )
            region = frame[y0 : y0 + height, x0 : x0 + width]
            region[placed] = patch[placed]
        return frame

    @cached_property
    def sprites(self) -> list[tuple[np.ndarray, float]]:
        """Each layer's texture in its own unit coordinates, at least as fine as the screen."""
        rng = np.random.default_rng([self.seed, 1])
        return [
            render_sprite(layer, float(math.ceil(layer.radius.max())) + 1.0, rng)
            for layer in self.plan.layers
        ]

    @cached_property
    def world(self) -> np.ndarray:
        """The background, large enough for the whole camera pan."""
        rng = np.random.default_rng([self.seed, 2])
        width, height = background_extent(self.plan)
        if self.background.photo is not None:
            return photo_world(rng, self.background, width, height)
        return draw_world(rng, self.background, width, height)


def photo_world(
    rng: np.random.Generator, background: Background, width: int, height: int
) -> np.ndarray:
    """A ``uint8 [height, width, 3]`` background cut from ``background.photo``: a random crop
    of the frame's aspect, maybe mirrored, resized to the background; grey photos tinted with
    the background's hue."""
    photo = load_photo(str(background.photo))
    rows, cols = photo.shape[:2]
    aspect = width / height
    crop_height = min(rows, cols / aspect) * rng.uniform(0.55, 1.0)
    crop_width = crop_height * aspect
    top = rng.uniform(0.0, rows - crop_height)
    left = rng.uniform(0.0, cols - crop_width)
    crop = photo[int(top) : int(top + crop_height), int(left) : int(left + crop_width)]
    shrinking = crop.shape[1] > width
    world = cv2.resize(
        crop, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    )
    if rng.random() < 0.5:
        world = world[:, ::-1]
    world = world.astype(np.float32)
    if background.photo in GREY_PHOTOS:
        tint = hsv(background.hue, rng.uniform(0.15, 0.5), 1.0) / 255.0
        world = world * tint * rng.uniform(0.7, 1.1)
    return np.ascontiguousarray(np.clip(world, 0, 255).astype(np.uint8))


def draw_world(
    rng: np.random.Generator, background: Background, width: int, height: int
) -> np.ndarray:
    """A ``uint8 [height, width, 3]`` background in ``background``'s style."""
    grid = np.stack(
        [
            hsv(
                background.hue + rng.uniform(-0.12, 0.12),
                rng.uniform(0.05, 0.4),
                rng.uniform(0.3, 0.75),
            )
            for _ in range(3 * 5)
        ]
    ).reshape(3, 5, 3)
    world = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    if background.style == "stripes":
        angle = rng.uniform(0.0, np.pi)
        period = rng.uniform(10.0, 30.0)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        wave = np.sin(2.0 * np.pi * (xs * math.cos(angle) + ys * math.sin(angle)) / period)
        tint = rng.uniform(0.5, 1.0, 3).astype(np.float32) * rng.uniform(12.0, 25.0)
        world += wave[..., None] * tint
    elif background.style == "blobs":
        for _ in range(int(rng.integers(12, 25))):
            colour = hsv(rng.random(), rng.uniform(0.05, 0.35), rng.uniform(0.25, 0.8))
            cv2.ellipse(
                world,
                (int(rng.integers(width)), int(rng.integers(height))),
                (int(rng.integers(4, 18)), int(rng.integers(4, 18))),
                float(rng.uniform(0, 180)),
                0.0,
                360.0,
                colour.tolist(),
                -1,
            )
        world = cv2.GaussianBlur(world, (0, 0), 1.2)
    else:
        speckle = rng.normal(0.0, 14.0, (height // 3 + 1, width // 3 + 1)).astype(np.float32)
        speckle = cv2.resize(speckle, (width, height), interpolation=cv2.INTER_LINEAR)
        world += speckle[..., None]
    world += rng.normal(0.0, 5.0, (height, width, 1)).astype(np.float32)
    world += rng.normal(0.0, 2.0, (height, width, 3)).astype(np.float32)
    return np.clip(world, 0, 255).astype(np.uint8)


def render_sprite(
    layer: Layer, pixels_per_unit: float, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """The layer's texture and colours on a square ``uint8`` sprite centred on its origin,
    ``pixels_per_unit`` pixels per unit of its coordinates; returns (sprite, pixels_per_unit)."""
    half = int(math.ceil(_SPRITE_MARGIN * pixels_per_unit))
    coords = (np.arange(2 * half + 1, dtype=np.float32) - half) / pixels_per_unit
    xs, ys = np.meshgrid(coords, coords)
    if layer.texture == "photo":
        return photo_sprite(layer, pixels_per_unit, half), pixels_per_unit
    angle = layer.pattern["angle"]
    u = xs * math.cos(angle) + ys * math.sin(angle)
    v = -xs * math.sin(angle) + ys * math.cos(angle)
    if layer.texture == "stripes":
        weight = (np.sin(2.0 * np.pi * u / layer.pattern["period"]) > 0).astype(np.float32)
    elif layer.texture == "checker":
        cell = layer.pattern["cell"]
        weight = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    elif layer.texture == "dots":
        spacing = layer.pattern["spacing"]
        du, dv = u / spacing - np.round(u / spacing), v / spacing - np.round(v / spacing)
        weight = (du**2 + dv**2 < 0.3**2).astype(np.float32)
    elif layer.texture == "rings":
        radius = np.sqrt(xs**2 + ys**2)
        weight = (np.sin(2.0 * np.pi * radius / layer.pattern["period"]) > 0).astype(np.float32)
    else:  # noisy solid colour: faint blotches of the secondary colour
        blotches = rng.uniform(0.0, 0.45, (5, 5)).astype(np.float32)
        weight = cv2.resize(blotches, (2 * half + 1, 2 * half + 1), interpolation=cv2.INTER_CUBIC)
    primary, secondary = layer.colours
    sprite = primary * (1.0 - weight[..., None]) + secondary * weight[..., None]
    sprite += rng.normal(0.0, 6.0, (2 * half + 1, 2 * half + 1, 1)).astype(np.float32)
    sprite = cv2.GaussianBlur(sprite.astype(np.float32), (0, 0), 0.8)  # tame aliasing
    return np.clip(sprite, 0, 255).astype(np.uint8), pixels_per_unit


def photo_sprite(layer: Layer, pixels_per_unit: float, half: int) -> np.ndarray:
    """The layer's sprite cut from its photo: unit coordinates ``u`` show photo point
    ``(x, y) + scale * R(angle) u`` (``pattern`` holds them, in photo pixels), hue shifted by
    ``pattern["hue_shift"]`` (a look-alike's colour)."""
    photo = load_photo(str(layer.photo))
    pattern = layer.pattern
    scale = pattern["scale"]
    # shrink the photo first (area averaging) so the warp samples it at about its own rate
    shrink = max(1.0, scale / pixels_per_unit)
    if shrink > 1.0:
        size = (max(1, round(photo.shape[1] / shrink)), max(1, round(photo.shape[0] / shrink)))
        photo = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
    linear = rotation(pattern["angle"]) * (scale / shrink / pixels_per_unit)
    centre = np.array([pattern["x"], pattern["y"]]) / shrink
    shift = centre - linear @ np.array([half, half], dtype=np.float64)
    side = 2 * half + 1
    sprite = cv2.warpAffine(
        photo,
        np.hstack([linear, shift[:, None]]),
        (side, side),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )
    hue_shift = pattern.get("hue_shift", 0.0)
    if hue_shift:
        hsv_sprite = cv2.cvtColor(sprite, cv2.COLOR_RGB2HSV_FULL)
        hsv_sprite[..., 0] = (hsv_sprite[..., 0].astype(int) + round(hue_shift * 256)) % 256
        sprite = cv2.cvtColor(hsv_sprite, cv2.COLOR_HSV2RGB_FULL)
    return sprite
