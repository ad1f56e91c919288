"""``python -m vos.data.synthetic``: export the synthetic dataset in the DAVIS 2017 layout."""

from __future__ import annotations

import argparse

from vos.cli.errors import reported_as_one_line
from vos.data.synthetic.export import export_davis
from vos.data.synthetic.source import dataset_config_defaults
from vos.files import check_output_folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vos.data.synthetic",
        description="Export the synthetic VOS dataset (train and val) in the DAVIS 2017 layout, "
        "with the frame size of conf/dataset/synthetic.yaml and the knobs of the scene preset "
        "conf/dataset/scene/<--scene>.yaml unless overridden.",
    )
    parser.add_argument(
        "--scene", default="simple", help="scene preset: simple (default) or realistic"
    )
    parser.add_argument("--out", required=True, help="dataset root to write")
    parser.add_argument("--videos", type=int, default=8, help="videos per split")
    parser.add_argument("--frames", type=int, default=40, help="frames per video (val: >= 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, help="frame height (default: the dataset's)")
    parser.add_argument("--width", type=int, help="frame width (default: the dataset's)")
    parser.add_argument("--max-objects", type=int, help="default: the preset's")
    parser.add_argument(
        "--overwrite", action="store_true", help="write into --out even if it holds files"
    )
    args = parser.parse_args(argv)
    with reported_as_one_line("vos.data.synthetic"):
        defaults = dataset_config_defaults(args.scene)
        scene = defaults["scene"]
        if args.max_objects is not None:
            scene["max_objects"] = args.max_objects
        args.height = args.height or defaults["height"]
        args.width = args.width or defaults["width"]
        check_output_folder(args.out, "--out", overwrite=args.overwrite)
        written = export_davis(
            args.out,
            videos_per_split=args.videos,
            num_frames=args.frames,
            seed=args.seed,
            height=args.height,
            width=args.width,
            **scene,
        )
    print(
        f"wrote {len(written['train'])} train + {len(written['val'])} val videos x "
        f"{args.frames} frames ({args.height}x{args.width}, {args.scene} scene, seed "
        f"{args.seed}) to {args.out}"
    )
