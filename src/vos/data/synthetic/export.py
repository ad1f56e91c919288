"""Export of the synthetic dataset in the DAVIS 2017 layout (frames, palette masks, backward
flow, image sets and the measured factors), for tools that read files. The command line is
``python -m vos.data.synthetic`` (`vos.cli.export`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vos.data.palette import write_frame, write_mask
from vos.data.sources.davis import DavisLayout
from vos.data.synthetic.source import SPLITS, SyntheticSource
from vos.files import write_atomic, write_json_atomic


def flow_path(layout: DavisLayout, video: str, frame_name: str) -> Path:
    """Where `export_davis` writes a frame's backward flow: ``Flow/<resolution>/<video>/``."""
    return layout.root / "Flow" / layout.resolution / video / f"{frame_name}.npy"


def export_davis(
    out_root: str | Path,
    *,
    videos_per_split: int,
    num_frames: int,
    seed: int = 0,
    height: int = 128,
    width: int = 224,
    **knobs: float | int | bool,
) -> dict[str, list[str]]:
    """Write a train and a val split in the DAVIS 2017 layout under ``out_root``:

    - ``JPEGImages/480p/<video>/00000.jpg`` frames,
    - ``Annotations/480p/<video>/00000.png`` palette masks (DAVIS palette),
    - ``Flow/480p/<video>/00000.npy`` backward flow, float32 ``[2, H, W]``,
    - ``ImageSets/2017/{train,val}.txt`` listing the videos,
    - ``factors.json``: ``{video: {factor: bool}}`` for both splits.

    The folders say ``480p`` because that is the name of DAVIS's layout; the frames are
    ``height x width``. ``knobs`` go to `SyntheticScene`. Returns the video names per split.
    """
    layout = DavisLayout(Path(out_root))
    written: dict[str, list[str]] = {}
    factors: dict[str, dict[str, bool]] = {}
    for split in SPLITS:
        source = SyntheticSource(
            split, videos_per_split, num_frames, seed=seed, height=height, width=width, **knobs
        )
        for video in source.videos():
            scene, info = source.scene(video), source.info(video)
            for t, frame_name in enumerate(info.frame_names):
                write_frame(layout.frame_path(video, frame_name), scene.frame(t))
                write_mask(layout.mask_path(video, frame_name), scene.mask(t))
                _save_array(flow_path(layout, video, frame_name), scene.flow(t))
            factors[video] = dict(info.factors)
        image_set = layout.image_set(split)
        image_set.parent.mkdir(parents=True, exist_ok=True)
        image_set.write_text("".join(f"{video}\n" for video in source.videos()))
        written[split] = source.videos()
    write_json_atomic(layout.root / "factors.json", factors)
    return written


def _save_array(path: Path, array: np.ndarray) -> None:
    """Write to a temporary name, then rename: a reader never sees half an array."""

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as file:  # a file object: np.save would append ".npy" to a path
            np.save(file, array)

    write_atomic(path, save)
