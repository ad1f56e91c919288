"""``python -m vos.data.synthetic``: export the synthetic dataset in the DAVIS 2017 layout."""

from __future__ import annotations

import argparse

from vos.cli.errors import reported_as_one_line
from vos.data.synthetic.export import export_davis
from vos.data.synthetic.source import dataset_config_defaults
from vos.files import check_output_folder


def main(argv: list[str] | None = None) -> None:
    defaults = dataset_config_defaults()
    parser = argparse.ArgumentParser(
        prog="python -m vos.data.synthetic",
        description="Export the synthetic VOS dataset (train and val) in the DAVIS 2017 layout, "
        "with the frame size and scene knobs of conf/dataset/synthetic.yaml unless overridden.",
    )
    parser.add_argument("--out", required=True, help="dataset root to write")
    parser.add_argument("--videos", type=int, default=8, help="videos per split")
    parser.add_argument("--frames", type=int, default=40, help="frames per video (val: >= 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=defaults["height"])
    parser.add_argument("--width", type=int, default=defaults["width"])
    parser.add_argument("--max-objects", type=int, default=defaults["scene"]["max_objects"])
    parser.add_argument(
        "--overwrite", action="store_true", help="write into --out even if it holds files"
    )
    args = parser.parse_args(argv)
    scene = {**defaults["scene"], "max_objects": args.max_objects}
    with reported_as_one_line("vos.data.synthetic"):
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
        f"{args.frames} frames ({args.height}x{args.width}, seed {args.seed}) to {args.out}"
    )
