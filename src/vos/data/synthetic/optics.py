"""What a real camera adds to a painted frame, in the realistic preset: motion blur along the
exact flow, changing light, sensor noise and JPEG compression. Masks and flow are those of the
sharp scene (as a human annotator and an exact flow would give them).

Each effect is off when its knob is 0. The draws come from the scene's own stream; the noise of
frame t from a stream of (seed, t), so a frame read alone equals the frame read in sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_BLUR_SAMPLES = 7
_MAX_BLUR = 0.05  # longest blur streak, fraction of the shorter frame side


@dataclass(frozen=True)
class Optics:
    """Per-video camera effects (see the module)."""

    gain: np.ndarray  # [T] overall brightness factor
    tint: np.ndarray  # [T, 3] per-channel factor (colour of the light)
    gradient: np.ndarray  # [T, 2] brightness slope across the frame (x, y), per frame width
    exposure: float  # share of the frame interval the shutter is open (blur length / flow)
    noise: float  # standard deviation of the sensor noise, grey levels
    jpeg_quality: int  # 0: no compression

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        time: np.ndarray,
        *,
        lighting: float,
        motion_blur: float,
        noise: float,
        jpeg_quality: int,
    ) -> Optics:
        def wave(amplitude: float) -> np.ndarray:
            period = rng.uniform(15.0, 50.0)
            return amplitude * np.sin(2.0 * np.pi * time / period + rng.uniform(0.0, 2.0 * np.pi))

        gain = np.exp(wave(rng.uniform(0.5, 1.0) * lighting) + rng.uniform(-0.5, 0.5) * lighting)
        tint = np.exp(np.stack([wave(0.25 * lighting) for _ in range(3)], axis=1))
        gradient = np.stack([wave(0.6 * lighting) for _ in range(2)], axis=1)
        quality = int(rng.integers(jpeg_quality, 96)) if 0 < jpeg_quality < 96 else jpeg_quality
        return cls(
            gain=gain,
            tint=tint,
            gradient=gradient,
            exposure=float(rng.uniform(0.5, 1.0) * motion_blur),
            noise=float(rng.uniform(0.5, 1.0) * noise),
            jpeg_quality=quality,
        )

    @property
    def blurs(self) -> bool:
        return self.exposure > 0.0

    def apply(
        self, frame: np.ndarray, t: int, seed: int, velocity: np.ndarray | None
    ) -> np.ndarray:
        """The camera's image ``uint8 [H, W, 3]`` of the sharp ``frame`` ``t``; ``velocity``
        ``[2, H, W]`` is where each pixel's surface was one frame earlier (needed to blur)."""
        image = frame.astype(np.float32)
        height, width = frame.shape[:2]
        if self.blurs and velocity is not None:
            image = _motion_blur(image, velocity, self.exposure, _MAX_BLUR * min(height, width))
        if np.any(self.gain != 1.0) or np.any(self.tint != 1.0) or np.any(self.gradient):
            xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)
            ys = np.linspace(-0.5, 0.5, height, dtype=np.float32) * (height / width)
            slope = self.gradient[t]
            light = self.gain[t] * (1.0 + slope[0] * xs[None, :] + slope[1] * ys[:, None])
            image *= np.clip(light, 0.2, None)[..., None] * self.tint[t].astype(np.float32)
        if self.noise > 0.0:
            noise_rng = np.random.default_rng([seed, 5, t])
            image += noise_rng.normal(0.0, self.noise, image.shape).astype(np.float32)
        image = np.clip(image, 0, 255).astype(np.uint8)
        if self.jpeg_quality > 0:
            ok, encoded = cv2.imencode(
                ".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]
            )
            assert ok
            image = np.ascontiguousarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1])
        return image


def _motion_blur(
    image: np.ndarray, velocity: np.ndarray, exposure: float, longest: float
) -> np.ndarray:
    """Average of the image along each pixel's path while the shutter is open: samples at
    ``p + s * velocity(p)`` for ``s`` in ``[0, exposure]``, streaks capped at ``longest``."""
    length = np.sqrt(velocity[0] ** 2 + velocity[1] ** 2) * exposure
    scale = exposure * np.minimum(1.0, longest / np.maximum(length, 1e-6))
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    total = np.zeros_like(image)
    for s in np.linspace(0.0, 1.0, _BLUR_SAMPLES):
        map_x = xs + (s * scale * velocity[0]).astype(np.float32)
        map_y = ys + (s * scale * velocity[1]).astype(np.float32)
        total += cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return total / _BLUR_SAMPLES
