"""``python -m vos.ablate PAPER [PAPER ...]``: a paper's ablation table at the tiny CPU scale.

Runs the paper's ``experiment=`` sweeps (`PAPERS`: the tables and the step budget of each
paper, chosen so that a whole paper trains and validates in at most 30 minutes on a 2-core
CPU) as Hydra multiruns into ``outputs/ablate/<paper>/<table>/``, then writes
``experiments/<paper>/results.md`` (the command, the date, the scale, the table with the
paper's J&F beside ours) and ``experiments/<paper>/results.png`` (vos.report's figure).

    python -m vos.ablate rmnet                       # make ablate PAPER=rmnet
    python -m vos.ablate lmrc --steps 20 --videos 2  # a quicker, noisier table
    python -m vos.ablate hmmn -- logger=wandb        # Hydra overrides after --
    python -m vos.ablate all --report-only           # tables again from the sweep folders
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from vos.config import CONFIG_DIR
from vos.report import find_runs, load_paper, markdown_table, save_figure

EXPERIMENTS_DIR = CONFIG_DIR.parent / "experiments"  # experiments/<paper>/paper.yaml


@dataclass(frozen=True)
class Ablation:
    title: str
    tables: tuple[str, ...]  # experiment= configs, one multirun each
    steps: int  # training steps of every row
    videos: int  # validation videos (the first of the generated eval split)


# The tables and budgets of every paper. A row costs about steps x (s/step) + videos x (s/video);
# timed 5- and 10-step runs of each reader's full model at this scale (one thread, beside another
# training on the same 2 cores: an upper bound) gave RMNet 1.7 s/step and 2.0 s/video, HMMN 2.1
# and 2.9, LCM 1.8 and 2.5, LMRC 2.9 and 5.4. Per paper: RMNet 4 rows x (200 x 1.7 + 16 x 2.0)
# s, HMMN 6 x (100 x 2.1 + 8 x 2.9), LCM 5 x (150 x 1.8 + 8 x 2.5), LMRC 6 x (70 x 2.9 + 8 x
# 5.4): 24-25 minutes each, under the 30-minute target.
PAPERS = {
    "rmnet": Ablation("RMNet Table 5: memory and query regions", ("rmnet_table5",), 200, 16),
    "hmmn": Ablation("HMMN Table 5: kernel and top-k guided memory", ("hmmn_table5",), 100, 8),
    "lcm": Ablation("LCM Table 4: sub-modules", ("lcm_table4", "lcm_table4_no_grm"), 150, 8),
    "lmrc": Ablation("LMRC Table 4: settings A-F", ("lmrc_table4",), 70, 8),
}

# The tiny CPU scale of every paper: the defaults of `make train` (model/size=tiny, generated
# videos at 128x224, batch 4, 3-frame clips), one validation at the end, CSV logs.
SCALE = ["logger=csv"]


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def train_command(
    table: str, steps: int, videos: int, sweep_dir: Path, extra: list[str]
) -> list[str]:
    """``vos.train``'s arguments for one table's multirun; ``extra`` overrides win."""
    ours = [
        f"experiment={table}",
        *SCALE,
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        f"data.val_videos={videos}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    replaced = {_key(o) for o in extra}
    return ["-m", "vos.train", "-m", *(o for o in ours if _key(o) not in replaced), *extra]


def describe(root: Path) -> dict[str, str]:
    """What the sweeps below ``root`` ran, as their files say: the scale and budget of the
    first run (``.hydra/``) and each sweep's command line (``multirun.yaml``)."""
    configs = sorted(root.rglob(".hydra/config.yaml"))
    if not configs:
        raise FileNotFoundError(f"no run folder below {root}: run the sweeps first")
    config = OmegaConf.load(configs[0])
    choices = OmegaConf.load(configs[0].with_name("hydra.yaml")).hydra.runtime.choices
    data = config.dataset
    commands = []
    for multirun in sorted(root.glob("*/multirun.yaml")):
        overrides = OmegaConf.load(multirun).hydra.overrides
        hydra = [str(o) for o in overrides.hydra if not str(o).startswith("hydra.mode=")]
        line = shlex.join([*(str(o) for o in overrides.task), *hydra])
        commands.append(f"python -m vos.train -m {line}")
    return {
        "steps": str(config.trainer.max_steps),
        "videos": str(config.data.val_videos or "all"),
        "scale": (
            f"`model/size={choices.get('model/size')}`, `dataset={data.name}` at "
            f"{data.height}x{data.width}, batch {config.data.batch_size}, "
            f"{config.data.clip.num_frames}-frame clips"
        ),
        "commands": "\n".join(commands),
    }


def _shown(path: Path) -> str:
    """A path as results.md names it: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def write_results(
    paper: str, sweep_root: Path, results_dir: Path, command: str, minutes: float | None = None
) -> tuple[Path, Path]:
    """``results_dir``/results.md (the command, the date, the scale, vos.report's table) and
    results.png (vos.report's figure) from the sweeps below ``sweep_root``."""
    ablation = PAPERS[paper]
    entries = load_paper(EXPERIMENTS_DIR / paper / "paper.yaml")
    runs = find_runs([sweep_root])
    about = describe(sweep_root)
    results_dir.mkdir(parents=True, exist_ok=True)
    markdown = results_dir / "results.md"
    figure = results_dir / "results.png"
    save_figure(runs, figure, entries, f"{ablation.title} (tiny CPU scale)")
    when = datetime.date.today().isoformat()
    if minutes is not None:
        when += f", {minutes:.1f} min on {os.cpu_count()} CPU cores"
    lines = [
        f"# {ablation.title}, tiny CPU scale",
        "",
        f"{command}, {when}.",
        "",
        f"Every row trains for {about['steps']} steps from random weights ({about['scale']}) "
        f"and is validated once, on the first {about['videos']} videos of the validation "
        "split. The paper's column is its DAVIS 2017 val J&F after full training "
        f"(`experiments/{paper}/paper.yaml`): compare the order of the rows, not the values. "
        f"Run folders: `{_shown(sweep_root)}`, from",
        "",
        "```",
        about["commands"],
        "```",
        "",
        markdown_table(runs, entries),
        "",
        f"![J&F against the memory read's time, and per row]({figure.name})",
        "",
    ]
    markdown.write_text("\n".join(lines))
    return markdown, figure


def ablate(
    paper: str,
    steps: int | None = None,
    videos: int | None = None,
    sweep_root: Path = Path("outputs/ablate"),
    results_dir: Path | None = None,
    extra: list[str] | None = None,
    argv: list[str] | None = None,
    report_only: bool = False,
    dry_run: bool = False,
) -> tuple[Path, Path] | None:
    """Run ``paper``'s sweeps (unless ``report_only``) and write its results; ``argv`` is the
    command line results.md names."""
    ablation = PAPERS[paper]
    root = sweep_root / paper
    commands = [
        train_command(
            table,
            steps or ablation.steps,
            videos or ablation.videos,
            Path(_shown(root / table)),
            list(extra or []),
        )
        for table in ablation.tables
    ]
    if dry_run:
        print("\n".join("python " + shlex.join(command) for command in commands))
        return None
    started = time.perf_counter()
    if not report_only:
        if root.exists():
            shutil.rmtree(root)  # a previous sweep's rows would join this table
        for command in commands:
            print(f"vos.ablate: python {shlex.join(command)}", flush=True)
            if subprocess.run([sys.executable, *command]).returncode != 0:
                raise SystemExit(f"vos.ablate: {paper}: the sweep failed: {shlex.join(command)}")
    argv = argv if argv is not None else [paper]
    command = f"`python -m vos.ablate {shlex.join(argv)}`"
    if argv == [paper]:
        command += f" (`make ablate PAPER={paper}`)"
    minutes = None if report_only else (time.perf_counter() - started) / 60
    return write_results(paper, root, results_dir or EXPERIMENTS_DIR / paper, command, minutes)


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
    parser.add_argument("papers", nargs="+", choices=[*PAPERS, "all"], help="papers to run")
    parser.add_argument("--steps", type=int, help="training steps per row (default: PAPERS)")
    parser.add_argument("--videos", type=int, help="validation videos (default: PAPERS)")
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
    papers = list(PAPERS) if "all" in args.papers else args.papers
    options = [
        *(["--steps", str(args.steps)] if args.steps else []),
        *(["--videos", str(args.videos)] if args.videos else []),
        *(
            ["--sweep-root", str(args.sweep_root)]
            if args.sweep_root != Path("outputs/ablate")
            else []
        ),
        *(["--report-only"] if args.report_only else []),
        *(["--", *extra] if extra else []),
    ]
    for paper in papers:
        written = ablate(
            paper,
            steps=args.steps,
            videos=args.videos,
            sweep_root=args.sweep_root,
            results_dir=args.results_dir / paper if args.results_dir else None,
            extra=extra,
            argv=[paper, *options],
            report_only=args.report_only,
            dry_run=args.dry_run,
        )
        if written:
            print(f"vos.ablate: wrote {_shown(written[0])} and {_shown(written[1])}")


if __name__ == "__main__":
    main()
