"""``python -m vos.ablate PAPER [PAPER ...]``: a paper's ablation table at the tiny CPU scale.

Runs the paper's ``experiment=`` sweeps (``experiments/<paper>/ablation.yaml``: the tables, the
step budget, the seeds and the main comparison of each paper) as Hydra multiruns into
``outputs/ablate/<paper>/<table>/``, then writes ``experiments/<paper>/results.md`` and
``results.png`` (see `vos.results.ablation`). Run it again to resume: finished jobs are kept,
stopped ones continue from their last checkpoint.

    python -m vos.ablate rmnet                       # make ablate PAPER=rmnet
    python -m vos.ablate lmrc --steps 20 --videos 2  # a quicker, noisier table
    python -m vos.ablate lcm --seeds 0               # one seed a row
    python -m vos.ablate hmmn -- logger=wandb        # Hydra overrides after --
    python -m vos.ablate all --report-only           # tables again from the sweep folders
"""

from __future__ import annotations

import argparse
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from vos.cli.errors import reported_as_one_line
from vos.results.ablation import AblationError, find_ablations, shown
from vos.results.ablation import ablate as run_ablation


@contextmanager
def _sweep_failures():
    try:
        yield
    except AblationError as error:
        raise SystemExit(f"vos.ablate: {error}") from error


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m vos.ablate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ablations = find_ablations()
    parser.add_argument("papers", nargs="+", choices=[*ablations, "all"], help="papers to run")
    parser.add_argument(
        "--steps", type=int, help="training steps per row (default: the paper's ablation.yaml)"
    )
    parser.add_argument(
        "--videos", type=int, help="validation videos (default: the paper's ablation.yaml)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="seeds of every row (default: the paper's ablation.yaml)",
    )
    parser.add_argument(
        "--sweep-root",
        type=Path,
        default=Path("outputs/ablate"),
        help="multirun folders: <root>/<paper>/<table> (default: outputs/ablate)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        help="write <dir>/<paper>/results.md and .png (default: experiments/<paper>/)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="write the results from existing sweeps"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    # a stop by SIGTERM unwinds like Ctrl-C, so the stopped sweep's minutes are still written
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    papers = list(ablations) if "all" in args.papers else args.papers
    options = [
        *(["--steps", str(args.steps)] if args.steps else []),
        *(["--videos", str(args.videos)] if args.videos else []),
        *(["--seeds", *map(str, args.seeds)] if args.seeds else []),
        *(
            ["--sweep-root", str(args.sweep_root)]
            if args.sweep_root != Path("outputs/ablate")
            else []
        ),
        *(["--report-only"] if args.report_only else []),
        *(["--", *extra] if extra else []),
    ]
    for paper in papers:
        with reported_as_one_line("vos.ablate"), _sweep_failures():
            written = run_ablation(
                paper,
                steps=args.steps,
                videos=args.videos,
                seeds=tuple(args.seeds) if args.seeds else None,
                sweep_root=args.sweep_root,
                results_dir=args.results_dir / paper if args.results_dir else None,
                extra=extra,
                argv=[paper, *options],
                report_only=args.report_only,
                dry_run=args.dry_run,
            )
        if written:
            print(f"vos.ablate: wrote {shown(written[0])} and {shown(written[1])}")
