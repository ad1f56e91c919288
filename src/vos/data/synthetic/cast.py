"""Who is in a video and how each object looks: the targets, the look-alike distractors, their
shapes, textures and colours, and the size and rotation each has in every frame.

Where the objects go is left to `staging`; this module only draws the `Layer`s.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping

import numpy as np

from vos.data.synthetic.deformation import Deformation, Limb, organic_outline
from vos.data.synthetic.geometry import hsv
from vos.data.synthetic.layers import Layer
from vos.data.synthetic.photos import OBJECT_PHOTOS, load_photo

SHAPE_KINDS: tuple[str, ...] = ("ellipse", "rectangle", "triangle", "star", "polygon", "blob")
TEXTURE_KINDS: tuple[str, ...] = ("noise", "stripes", "checker", "dots", "rings")


def draw_layers(
    rng: np.random.Generator,
    staged: Mapping[str, bool],
    time: np.ndarray,
    height: int,
    *,
    max_objects: int,
    max_distractors: int,
    min_size: float,
    max_size: float,
    scale_change: float = 0.2,
    spin: float = 0.05,
) -> list[Layer]:
    """The targets, then the distractors, without trajectories (centres are staged later).
    ``scale_change`` is the largest relative size swing of an object, ``spin`` its largest
    spin in radians per frame.

    The targets of one video never share a shape, a texture kind or a hue band, so they can
    be told apart by appearance; a distractor copies one target's look with a shifted hue.
    """
    num_targets = int(rng.integers(1, max_objects + 1))
    num_distractors = (
        int(rng.integers(1, max_distractors + 1))
        if staged["distractors"] and max_distractors > 0
        else 0
    )
    # frame 0 always holds a target; an occluder needs a second object
    needed = 1 + int(staged["late_objects"])
    needed += int(staged["occlusion"] and num_distractors == 0)
    num_targets = min(max(num_targets, needed), max_objects)

    shapes = rng.permutation(SHAPE_KINDS)[:num_targets]
    textures = rng.permutation(TEXTURE_KINDS)[:num_targets]
    first_hue = rng.random()
    layers = []
    for index in range(num_targets):
        # hues spread evenly around the wheel keep the targets of a video distinct
        hue = first_hue + index / num_targets + rng.uniform(-0.03, 0.03)
        layers.append(
            _draw_target(
                rng,
                str(shapes[index]),
                str(textures[index]),
                hue,
                time,
                height,
                (min_size, max_size, scale_change),
                spin,
            )
        )
    for _ in range(num_distractors):
        model = int(rng.integers(num_targets))
        layers.append(_draw_lookalike(rng, layers[model], time, spin))
        layers[-1].model = model
    return layers


def _draw_target(
    rng: np.random.Generator,
    shape: str,
    texture: str,
    hue: float,
    time: np.ndarray,
    height: int,
    sizes: tuple[float, float, float],
    spin: float,
) -> Layer:
    # the order of the draws below is part of every seed's video: do not reorder
    primary = hsv(hue, rng.uniform(0.6, 0.95), rng.uniform(0.65, 0.95))
    secondary = hsv(hue + rng.uniform(-0.04, 0.04), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.45))
    radius = _draw_radius(rng, time, height, *sizes)
    polygon = shape_polygon(shape, rng)
    pattern = draw_pattern(texture, rng, float(radius.mean()))
    return Layer(
        is_target=True,
        shape=shape,
        polygon=polygon,
        texture=texture,
        pattern=pattern,
        colours=(primary, secondary),
        radius=radius,
        angle=_draw_angle(rng, time, spin),
    )


def _draw_lookalike(rng: np.random.Generator, model: Layer, time: np.ndarray, spin: float) -> Layer:
    """A distractor of the same family: the model's outline squashed a little, the same
    texture kind and pattern, a hue shifted enough to tell apart but closer than any other
    target's."""
    squash = np.array([1.0, rng.uniform(0.8, 1.0)])
    polygon = model.polygon * (squash if rng.random() < 0.5 else squash[::-1])
    polygon /= np.linalg.norm(polygon, axis=1).max()
    shift = rng.choice([-1.0, 1.0]) * rng.uniform(0.045, 0.075)
    primary_hsv = colorsys.rgb_to_hsv(*(model.colours[0] / 255.0))
    secondary_hsv = colorsys.rgb_to_hsv(*(model.colours[1] / 255.0))
    primary = hsv(primary_hsv[0] + shift, primary_hsv[1], primary_hsv[2])
    secondary = hsv(secondary_hsv[0] + shift, secondary_hsv[1], secondary_hsv[2])
    pattern = dict(model.pattern)
    pattern["angle"] = float(rng.uniform(0.0, np.pi))
    radius = model.radius * rng.uniform(0.8, 1.2)
    return Layer(
        is_target=False,
        shape=model.shape,
        polygon=polygon,
        texture=model.texture,
        pattern=pattern,
        colours=(primary, secondary),
        radius=radius,
        angle=_draw_angle(rng, time, spin),
    )


def _draw_radius(
    rng: np.random.Generator,
    time: np.ndarray,
    height: int,
    min_size: float,
    max_size: float,
    scale_change: float,
) -> np.ndarray:
    """Bounding radius ``[T]`` in pixels: a base size that breathes slowly by up to
    ``scale_change`` (20% by default)."""
    base = 0.5 * rng.uniform(min_size, max_size) * height
    amplitude = rng.uniform(0.06, 0.2) * (scale_change / 0.2)
    period = rng.uniform(24.0, 60.0)
    phase = rng.uniform(0.0, 2.0 * np.pi)
    return base * (1.0 + amplitude * np.sin(2.0 * np.pi * time / period + phase))


def _draw_angle(rng: np.random.Generator, time: np.ndarray, spin: float) -> np.ndarray:
    """Rotation ``[T]`` in radians: a spin of up to ``spin`` radians per frame (0.05 is about
    3 degrees) plus a sway."""
    spin = rng.uniform(-spin, spin)
    sway = rng.uniform(0.0, 0.25)
    period = rng.uniform(20.0, 50.0)
    phase = rng.uniform(0.0, 2.0 * np.pi)
    start = rng.uniform(0.0, 2.0 * np.pi)
    return start + spin * time + sway * np.sin(2.0 * np.pi * time / period + phase)


def shape_polygon(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Vertices ``[V, 2]`` of a shape in unit coordinates (farthest vertex at radius 1)."""
    if kind == "ellipse":
        angles = np.linspace(0.0, 2.0 * np.pi, 40, endpoint=False)
        points = np.stack([np.cos(angles), rng.uniform(0.55, 0.85) * np.sin(angles)], axis=1)
    elif kind == "rectangle":
        half_height = rng.uniform(0.45, 0.8)
        points = np.array(
            [[-1, -half_height], [1, -half_height], [1, half_height], [-1, half_height]]
        )
    elif kind == "triangle":
        angles = np.pi / 2 + np.deg2rad([0.0, 120.0, 240.0] + rng.uniform(-12, 12, 3))
        points = np.stack([np.cos(angles), np.sin(angles)], axis=1) * rng.uniform(0.85, 1.0, (3, 1))
    elif kind == "star":
        tips = int(rng.choice([5, 6]))
        angles = np.linspace(0.0, 2.0 * np.pi, 2 * tips, endpoint=False)
        radii = np.where(np.arange(2 * tips) % 2 == 0, 1.0, rng.uniform(0.45, 0.58))
        points = np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]
    elif kind == "polygon":
        sides = int(rng.choice([5, 6, 8]))
        angles = np.linspace(0.0, 2.0 * np.pi, sides, endpoint=False)
        points = np.stack([np.cos(angles), rng.uniform(0.8, 1.0) * np.sin(angles)], axis=1)
    elif kind == "blob":
        angles = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
        radii = np.ones_like(angles)
        for harmonic in (2, 3, 4):
            radii += rng.uniform(0.05, 0.14) * np.cos(harmonic * angles + rng.uniform(0, 2 * np.pi))
        points = np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]
    else:
        raise ValueError(f"unknown shape kind {kind!r}")
    return points / np.linalg.norm(points, axis=1).max()


def draw_pattern(texture: str, rng: np.random.Generator, radius: float) -> dict[str, float]:
    """Texture parameters in the object's unit coordinates (its bounding radius is 1). Pattern
    periods are at least about 6 pixels on screen at the object's mean ``radius``, so that they
    neither alias into noise nor vanish when the object shrinks."""
    finest = 6.5 / max(radius, 1.0)  # 6.5 pixels in unit coordinates
    pattern = {"angle": float(rng.uniform(0.0, np.pi))}
    if texture == "stripes":
        pattern["period"] = max(float(rng.uniform(0.35, 0.55)), finest)
    elif texture == "checker":
        pattern["cell"] = max(float(rng.uniform(0.28, 0.42)), 0.6 * finest)
    elif texture == "dots":
        pattern["spacing"] = max(float(rng.uniform(0.4, 0.55)), finest)
    elif texture == "rings":
        pattern["period"] = max(float(rng.uniform(0.3, 0.45)), finest)
    return pattern


def restyle(
    rng: np.random.Generator,
    layers: list[Layer],
    time: np.ndarray,
    *,
    organic: bool,
    photos: bool,
    articulated_prob: float,
    limb_swing: float,
    wobble: float,
) -> None:
    """The realistic look, drawn from its own stream over `draw_layers`' layers: ``organic``
    gives each target a smooth random outline (articulated with probability
    ``articulated_prob``) that deforms over time; ``photos`` textures each target with a crop
    of a different photo. A distractor takes its target's outline mirrored and a nearby crop
    of the same photo, its hue shifted a little."""
    names = [str(name) for name in rng.permutation(OBJECT_PHOTOS)]
    targets = [layer for layer in layers if layer.is_target]
    for index, layer in enumerate(targets):
        if organic:
            articulated = bool(rng.random() < articulated_prob)
            layer.polygon, layer.deformation = organic_outline(
                rng, time, articulated=articulated, swing=limb_swing, wobble=wobble
            )
            layer.shape = "articulated" if articulated else "contour"
            layer.__dict__.pop("unit_area", None)  # the cached area of the old outline
        if photos:
            layer.texture = "photo"
            layer.photo = names[index % len(names)]
            layer.pattern = _draw_photo_crop(rng, layer.photo)
    for layer in layers:
        if layer.is_target or layer.model is None:
            continue
        model = layers[layer.model]
        if organic:
            layer.polygon = model.polygon * [-1.0, 1.0]
            layer.deformation = _mirrored(model.deformation)
            layer.shape = model.shape
            layer.__dict__.pop("unit_area", None)
        if photos:
            layer.texture = "photo"
            layer.photo = model.photo
            rows, cols = load_photo(str(model.photo)).shape[:2]
            nearby = rng.uniform(0.08, 0.18, 2) * rng.choice([-1.0, 1.0], 2) * (cols, rows)
            layer.pattern = {
                **model.pattern,
                "x": float(np.clip(model.pattern["x"] + nearby[0], 0, cols - 1)),
                "y": float(np.clip(model.pattern["y"] + nearby[1], 0, rows - 1)),
                "angle": float(rng.uniform(0.0, 2.0 * np.pi)),
                "hue_shift": float(rng.choice([-1.0, 1.0]) * rng.uniform(0.03, 0.06)),
            }


def _draw_photo_crop(rng: np.random.Generator, photo: str) -> dict[str, float]:
    """Where a sprite is cut from ``photo``: centre (photo pixels), scale (photo pixels per
    unit coordinate: the object spans 30-55% of the photo's shorter side) and angle."""
    rows, cols = load_photo(photo).shape[:2]
    scale = rng.uniform(0.15, 0.28) * min(rows, cols)
    return {
        "x": float(rng.uniform(scale, max(scale, cols - scale))),
        "y": float(rng.uniform(scale, max(scale, rows - scale))),
        "scale": float(scale),
        "angle": float(rng.uniform(0.0, 2.0 * np.pi)),
    }


def _mirrored(deformation: Deformation | None) -> Deformation | None:
    """``deformation`` of the outline mirrored in x, played backwards in time."""
    if deformation is None:
        return None
    flip = np.array([-1.0, 1.0])
    return Deformation(
        limbs=tuple(
            Limb(limb.joint * flip, limb.direction * flip, limb.reach, -limb.swing[::-1])
            for limb in deformation.limbs
        ),
        wave_frequency=deformation.wave_frequency * flip,
        wave_phase=deformation.wave_phase,
        wave_direction=deformation.wave_direction * flip,
        wave_amplitude=deformation.wave_amplitude[::-1],
    )
