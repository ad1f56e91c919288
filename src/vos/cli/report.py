"""``python -m vos.report DIR [DIR ...]``: training runs as one markdown table, a row per config.

Every folder below the given ones that holds a ``metrics.json`` (written by ``vos.train`` at
the end of a run) is a run. Runs whose command-line overrides (``.hydra/overrides.yaml``,
with the config-group options of ``.hydra/hydra.yaml``, given or default: ``model=stm``)
differ only by ``seed`` are one row; a row is named by the overrides that differ between rows
(never the seed), so a Hydra multirun folder reads as the table of its sweep. A row counts each
seed once (the run's resolved ``seed``, from ``.hydra/config.yaml``): of runs of one config with
the same seed it keeps the latest and prints a warning naming the others.

Columns: J&F (the mean over the row's seeds and videos, videos weighted by their objects: the
mean of the runs' J&F), its percentile bootstrap interval (``--level``, ``--resamples``), the
number of seeds and of videos, then J-Mean, F-Mean, J&F on the videos with distractors,
validation frames per second, milliseconds per memory read and parameters (millions), each the
mean over the row's runs. The interval resamples the seeds and, independently, the videos of
the last validation (``per_video`` in metrics.json): with one seed, the videos only; for a run
whose metrics.json has no per-video scores (written before they were stored), the seeds only,
and a single such run has no interval; a note under the table says which rows.

``--baseline TEXT`` picks the one row whose name holds TEXT and adds "Δ vs baseline": each
row's J&F minus the baseline's with an interval paired by video (the same resampled videos for
both rows, each row's seeds resampled on their own; both rows must hold the same videos). A row
whose interval includes 0 is marked ``≈``, not distinguishable from the baseline, with a note
under the table.

``--paper FILE`` adds the paper's numbers where a row matches: a YAML list of
``{match: {override key: value, ...}, label: "...", "J&F": 0.835}`` entries (see
``experiments/*/paper.yaml``); a row matches an entry when its overrides hold every pair.
``--out FILE`` writes the table (and prints it either way) and, beside it, a figure
(``--figure FILE``, by default ``--out`` with the suffix ``.png``): J&F with its interval as
error bars against the memory read's milliseconds per frame, one numbered point per row, and a
bar per row with the paper's J&F beside ours where the row matches one of its entries.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vos.cli.errors import reported_as_one_line
from vos.files import write_text_atomic
from vos.results.figures import save_figure
from vos.results.runs import duplicate_seed_warnings, find_runs, group_by_seed
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
    parser.add_argument(
        "--baseline", help="add each row's difference to the one row whose name holds this text"
    )
    parser.add_argument(
        "--level", type=float, default=0.95, help="the intervals' confidence (default 0.95)"
    )
    parser.add_argument(
        "--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)"
    )
    args = parser.parse_args(argv)
    if not 0 < args.level < 1:
        parser.error(f"--level must be between 0 and 1, got {args.level}")
    if args.resamples < 1:
        parser.error(f"--resamples must be at least 1, got {args.resamples}")
    with reported_as_one_line("vos.report"):
        runs = find_runs(args.folders)
        for line in duplicate_seed_warnings(group_by_seed(runs)):
            print(f"vos.report: warning: {line}", file=sys.stderr)
        paper = load_paper(args.paper) if args.paper else None
        table = markdown_table(runs, paper, args.baseline, args.level, args.resamples)
    print(table)
    if args.out:
        write_text_atomic(args.out, table + "\n")
    figure = args.figure or (Path(args.out).with_suffix(".png") if args.out else None)
    if figure:
        path = save_figure(runs, figure, paper, args.title, args.level, args.resamples)
        print(f"vos.report: figure written to {path}", file=sys.stderr)
