"""Small datasets on disk for tests: image-segmentation folders in the layouts
`vos.data.sources.static` reads, and a YouTube-VOS train split, from generated pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from vos.data.palette import write_frame, write_mask
from vos.data.synthetic import SyntheticSource

# where a layout puts image <stem> and its mask, relative to the root
LAYOUT_PATHS = {
    "ecssd": ("images/{stem}.jpg", "ground_truth_mask/{stem}.png"),
    "duts": ("DUTS-TR-Image/{stem}.jpg", "DUTS-TR-Mask/{stem}.png"),
    "hrsod": ("imgs/{stem}.jpg", "gt/{stem}.png"),
    "msra10k": ("{stem}.jpg", "{stem}.png"),
    "fss1000": ("{group}/{stem}.jpg", "{group}/{stem}.png"),
    "pair": ("photos/{stem}.png", "labels/{stem}.png"),
}


def image_and_mask(index: int, height: int = 40, width: int = 56) -> tuple[np.ndarray, np.ndarray]:
    """Random pixels and a binary mask (0/255) with a rectangle that moves with ``index``."""
    rng = np.random.default_rng(index)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    top, left = 4 + index % 5, 6 + index % 7
    mask[top : top + height // 2, left : left + width // 2] = 255
    return image, mask


def write_image_root(
    root: Path, layout: str, count: int = 4, height: int = 40, width: int = 56
) -> list[str]:
    """``count`` images with binary masks in ``layout``; returns the video names the static
    source gives them (``<root name>/<stem>``, FSS-1000: ``<root name>/<class>/<stem>``)."""
    image_pattern, mask_pattern = LAYOUT_PATHS[layout]
    names = []
    for index in range(count):
        fields = {"stem": f"im{index:03d}", "group": f"class{index % 2}"}
        image, mask = image_and_mask(index, height, width)
        image_path = root / image_pattern.format(**fields)
        mask_path = root / mask_pattern.format(**fields)
        image_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(image_path)
        Image.fromarray(mask, mode="L").save(mask_path)
        prefix = f"{fields['group']}/" if layout == "fss1000" else ""
        names.append(f"{root.name}/{prefix}{fields['stem']}")
    return sorted(names)


def write_youtube_train(
    root: Path, videos: int = 2, frames: int = 16, height: int = 48, width: int = 64, seed: int = 5
) -> list[str]:
    """A YouTube-VOS ``train`` split of generated videos: every 5th frame listed and masked,
    meta.json naming each object's frames. Returns the video names."""
    source = SyntheticSource(
        "train", videos, frames, seed=seed, height=height, width=width, late_object_prob=0.0
    )
    meta = {}
    names = []
    for index, video in enumerate(source.videos()):
        name = f"yt{index}"
        objects: dict[str, dict] = {}
        for t in range(0, frames, 5):
            frame_name = f"{t:05d}"
            mask = source.read_mask(video, t)
            write_frame(
                root / "train" / "JPEGImages" / name / f"{frame_name}.jpg",
                source.read_frame(video, t),
            )
            write_mask(root / "train" / "Annotations" / name / f"{frame_name}.png", mask)
            for label in np.unique(mask):
                if 0 < label < 255:
                    entry = objects.setdefault(str(int(label)), {"category": "x", "frames": []})
                    entry["frames"].append(frame_name)
        meta[name] = {"objects": objects}
        names.append(name)
    (root / "train" / "meta.json").write_text(json.dumps({"videos": meta}))
    return names


def write_davis_layout(root, videos: dict, splits: dict[str, list[str]]):
    """A DAVIS 2017 layout at ``root``: each video's label maps ``[T, H, W]`` as palette PNGs
    beside random RGB frames of their size, and ``ImageSets/2017/<split>.txt`` per split."""
    from vos.data.sources.davis import DavisLayout

    layout = DavisLayout(root)
    rng = np.random.default_rng(0)
    for video, labels in videos.items():
        for index, mask in enumerate(labels):
            frame = rng.integers(0, 256, size=(*mask.shape, 3), dtype=np.uint8)
            write_frame(layout.frame_path(video, f"{index:05d}"), frame)
            write_mask(layout.mask_path(video, f"{index:05d}"), mask)
    for split, names in splits.items():
        layout.image_set(split).parent.mkdir(parents=True, exist_ok=True)
        layout.image_set(split).write_text("".join(f"{video}\n" for video in names))
    return layout
