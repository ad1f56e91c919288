"""Reading and writing DAVIS-style images: RGB frames and palette (mode ``P``) masks.

Masks are ``uint8`` label maps: 0 background, 1..O objects, 255 void. They are stored as
palette PNGs with the full 256-entry DAVIS palette, because Pillow remaps indices on save
when the palette is short (ids can merge and 255 can become a small id).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vos.files import write_atomic

VOID_LABEL = 255


def _davis_palette() -> list[int]:
    """The palette of the DAVIS annotations (the PASCAL VOC colour map), 256 RGB triplets."""
    palette = []
    for index in range(256):
        r = g = b = 0
        cid = index
        for shift in range(7, -1, -1):
            r |= ((cid >> 0) & 1) << shift
            g |= ((cid >> 1) & 1) << shift
            b |= ((cid >> 2) & 1) << shift
            cid >>= 3
        palette.extend((r, g, b))
    return palette


DAVIS_PALETTE: list[int] = _davis_palette()


class ImageReadError(ValueError):
    """An image or mask on disk is missing, corrupt or of the wrong kind; the message names it."""


def read_frame(path: str | Path) -> np.ndarray:
    """An RGB frame as ``uint8 [H, W, 3]``."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"frame not found: {path}")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageReadError(f"corrupt or unreadable frame {path}: {error}") from error


def read_mask(path: str | Path) -> np.ndarray:
    """A label mask as ``uint8 [H, W]`` from a palette (``P``) or grayscale (``L``) PNG.

    RGB masks are refused: their colours are not labels, and guessing a mapping silently
    merges objects.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"mask not found: {path}")
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode not in ("P", "L"):
                raise ImageReadError(
                    f"mask {path} has mode {mode!r}; expected a palette ('P') or grayscale ('L') "
                    "PNG whose pixel values are object ids"
                )
            return np.asarray(image, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageReadError(f"corrupt or unreadable mask {path}: {error}") from error


def write_mask(path: str | Path, labels: np.ndarray) -> None:
    """Write a label map as a palette PNG with the full DAVIS palette (atomically)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a mask must be [H, W]; got shape {labels.shape} for {path}")
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError(f"mask labels must lie in 0..255 for {path}")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(DAVIS_PALETTE)
    write_atomic(path, lambda tmp: image.save(tmp, format="PNG"))


def write_frame(path: str | Path, frame: np.ndarray, quality: int = 95) -> None:
    """Write an RGB ``uint8 [H, W, 3]`` frame as JPEG (or PNG by suffix), atomically."""
    fmt = "PNG" if Path(path).suffix.lower() == ".png" else "JPEG"
    image = Image.fromarray(np.asarray(frame, dtype=np.uint8), mode="RGB")
    write_atomic(path, lambda tmp: image.save(tmp, format=fmt, quality=quality))
