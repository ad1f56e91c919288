"""``python -m vos.report DIR [DIR ...]``: training runs as one markdown table.

Every folder below the given ones that holds a ``metrics.json`` (written by ``vos.train`` at
the end of a run) is a row. A row is named by the command-line overrides of its run
(``.hydra/overrides.yaml``) that differ between the runs, so a Hydra multirun folder reads as
the table of its sweep. Columns: J&F, J-Mean, F-Mean, J&F on the videos with distractors,
validation frames per second, milliseconds per memory read, parameters (millions).

``--paper FILE`` adds the paper's numbers where a row matches: a YAML list of
``{match: {override key: value, ...}, label: "...", "J&F": 0.835}`` entries (see
``experiments/*/paper.yaml``); a row matches an entry when its overrides hold every pair.
``--out FILE`` writes the table (and prints it either way) and, beside it, a figure
(``--figure FILE``, by default ``--out`` with the suffix ``.png``): J&F against the memory
read's milliseconds per frame, one numbered point per row, and a bar per row with the
paper's J&F beside ours where the row matches one of its entries.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vos.cli.errors import reported_as_one_line
from vos.files import write_text_atomic
from vos.results.figures import save_figure
from vos.results.runs import find_runs
from vos.results.tables import load_paper, markdown_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vos.report", description=__doc__)
    parser.add_argument("folders", nargs="+", help="run or multirun folders")
    parser.add_argument("--paper", help="YAML list of the paper's rows to match")
    parser.add_argument("--out", help="write the markdown table here too")
    parser.add_argument(
        "--figure", help="write the figure (PNG) here; default: --out with the suffix .png"
    )
    parser.add_argument("--title", help="the figure's title")
    args = parser.parse_args(argv)
    with reported_as_one_line("vos.report"):
        runs = find_runs(args.folders)
        paper = load_paper(args.paper) if args.paper else None
        table = markdown_table(runs, paper)
    print(table)
    if args.out:
        write_text_atomic(args.out, table + "\n")
    figure = args.figure or (Path(args.out).with_suffix(".png") if args.out else None)
    if figure:
        path = save_figure(runs, figure, paper, args.title)
        print(f"vos.report: figure written to {path}", file=sys.stderr)
