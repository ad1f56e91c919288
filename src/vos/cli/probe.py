"""``python -m vos.probe lcm --ckpt PATH [--videos N] [--json]``: what a trained reader's
branches contribute (see `vos.bench.probe`)."""

from __future__ import annotations

import argparse
import json

from vos.bench.probe import __doc__ as PROBE_DOC
from vos.bench.probe import probe_lcm
from vos.cli.errors import reported_as_one_line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vos.probe", description=PROBE_DOC)
    sub = parser.add_subparsers(dest="reader", required=True)
    lcm = sub.add_parser("lcm", help="LCM: the sizes of GRM, PGM and ORM's terms")
    lcm.add_argument(
        "--ckpt", required=True, help="a checkpoint of `python -m vos.train model=lcm`"
    )
    lcm.add_argument(
        "--videos",
        type=int,
        default=4,
        help="how many of the split's videos are probed, from the first (default 4, whatever "
        "the overrides make the split hold)",
    )
    lcm.add_argument("--json", action="store_true", help="print one JSON object")
    lcm.add_argument(
        "overrides",
        nargs="*",
        help="eval-config dataset overrides choosing the split, e.g. dataset/scene=realistic "
        "(its size does not set how many videos are probed: --videos does)",
    )
    args = parser.parse_args(argv)
    with reported_as_one_line("vos.probe lcm"):
        summary = probe_lcm(args.ckpt, args.videos, args.overrides)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return
    for key, value in summary.items():
        print(f"{key:>18}  {value:.4g}")
