"""Real photographs for the realistic preset: the pictures that scikit-image and scikit-learn
ship inside their packages (nothing is downloaded).

Colour photos texture objects and backgrounds; the grey material photos (brick, grass, gravel)
only backgrounds, tinted. Which photo a target, a distractor or a background uses is drawn per
video (see `cast` and `render`).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

# (package, file inside it) of each photo, by name
_PHOTO_FILES: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage.data", "astronaut.png"),
    "chelsea": ("skimage.data", "chelsea.png"),
    "coffee": ("skimage.data", "coffee.png"),
    "rocket": ("skimage.data", "rocket.jpg"),
    "motorcycle": ("skimage.data", "motorcycle_left.png"),
    "retina": ("skimage.data", "retina.jpg"),
    "ihc": ("skimage.data", "ihc.png"),
    "hubble": ("skimage.data", "hubble_deep_field.jpg"),
    "china": ("sklearn.datasets", "images/china.jpg"),
    "flower": ("sklearn.datasets", "images/flower.jpg"),
    "brick": ("skimage.data", "brick.png"),
    "grass": ("skimage.data", "grass.png"),
    "gravel": ("skimage.data", "gravel.png"),
}
OBJECT_PHOTOS: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle",
    "retina",
    "ihc",
    "china",
    "flower",
)
# grey materials are tinted when they are a background
BACKGROUND_PHOTOS: tuple[str, ...] = (*OBJECT_PHOTOS, "hubble", "brick", "grass", "gravel")
GREY_PHOTOS: frozenset[str] = frozenset({"brick", "grass", "gravel"})


def photo_path(name: str) -> Path:
    """Where the installed package keeps photo ``name``; a clear error when it is missing."""
    if name not in _PHOTO_FILES:
        raise KeyError(f"unknown photo {name!r}; known: {sorted(_PHOTO_FILES)}")
    package, file = _PHOTO_FILES[name]
    try:
        path = Path(str(resources.files(package).joinpath(file)))
    except ModuleNotFoundError as error:
        raise RuntimeError(
            f"the realistic preset textures with the photos shipped by {package.split('.')[0]} "
            f"(scikit-image and scikit-learn are dependencies of vos): {error}"
        ) from error
    if not path.is_file():
        raise FileNotFoundError(f"photo {name!r} is not at {path} (is {package} installed?)")
    return path


@cache
def load_photo(name: str) -> np.ndarray:
    """RGB ``uint8 [H, W, 3]`` of photo ``name`` (grey photos are repeated over 3 channels).
    Cached: the array is shared, so callers must not write into it."""
    path = photo_path(name)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"could not decode photo {name!r} at {path}")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    image.setflags(write=False)
    return image
