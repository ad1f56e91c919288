"""``python -m vos.bench SUBCOMMAND [--json] [options]``: figures measured by the machine that
runs it (see `vos.bench`)."""

from __future__ import annotations

import argparse

from vos.bench import data, flow, inference, kernels, ops, readers, train
from vos.bench.common import print_records
from vos.cli.errors import reported_as_one_line

SUBCOMMANDS = {
    "inference": inference,
    "ops": ops,
    "readers": readers,
    "flow": flow,
    "data": data,
    "kernels": kernels,
    "train": train,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vos.bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        p.add_argument("--json", action="store_true", help="print one JSON list of records")
        module.add_arguments(p)
    args = parser.parse_args(argv)
    with reported_as_one_line(f"vos.bench {args.command}"):
        records = SUBCOMMANDS[args.command].run(args)
    # a subcommand whose records are not timings prints them its own way
    getattr(SUBCOMMANDS[args.command], "print_records", print_records)(records, args.json)
