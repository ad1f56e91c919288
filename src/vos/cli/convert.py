"""``python -m vos.convert --from {stm,stcn,hmmn,rmnet} IN.pth --out OUT.ckpt``.

Turns a checkpoint the authors released into a checkpoint of the suite's network for that
paper, with the official inference protocol stored in it: ``python -m vos.eval
ckpt_path=OUT.ckpt dataset=davis2017 dataset.root=...`` then runs the paper's inference.
Which file each mode expects, and where the authors publish it: docs/parity.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vos.cli.errors import reported_as_one_line
from vos.model.official.convert import MODES, convert_file, official_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vos.convert",
        description="Convert a released STM/STCN/HMMN/RMNet checkpoint into a vos checkpoint "
        "(weights, model config, the official inference protocol).",
        epilog="released files: "
        + "; ".join(f"{m}: {official_table(m)['released_file']}" for m in MODES),
    )
    parser.add_argument("--from", dest="mode", required=True, choices=MODES, help="file format")
    parser.add_argument("checkpoint", help="the released file (IN.pth)")
    parser.add_argument("--out", required=True, help="the vos checkpoint to write (OUT.ckpt)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    with reported_as_one_line("vos.convert"):
        out = Path(args.out)
        if out.resolve() == Path(args.checkpoint).resolve():
            raise ValueError(f"--out={out} is the file being converted: choose another path")
        if out.is_dir():
            raise IsADirectoryError(f"--out={out} is a folder: name the checkpoint file to write")
        if out.exists() and not args.overwrite:
            raise FileExistsError(f"--out={out} exists: choose another path or pass --overwrite")
        summary = convert_file(args.mode, args.checkpoint, args.out)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
