"""A paper's ablation table at the tiny CPU scale: its ``experiment=`` sweeps run as Hydra
multiruns, then ``experiments/<paper>/results.md`` (the command, the date, the scale, the table
with the paper's J&F beside ours) and ``results.png`` (the figure of `vos.results.figures`).

A reader's ablation is its own file, ``experiments/<reader>/ablation.yaml`` (found by
`find_ablations`; no list in the code names the readers)::

    title: "RMNet Table 5: memory and query regions"
    tables: [rmnet_table5]     # experiment= configs, one multirun each
    steps: 200                 # training steps of every row
    videos: 16                 # validation videos (the first of the generated eval split)

beside ``experiments/<reader>/paper.yaml``, the paper's rows for `vos.results.tables`.
"""

from __future__ import annotations

import datetime
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from vos.config import EXPERIMENTS_DIR
from vos.files import write_text_atomic
from vos.results.figures import save_figure
from vos.results.runs import duplicate_seed_warnings, find_runs, group_by_seed
from vos.results.tables import load_paper, markdown_table

ABLATION_FILE = "ablation.yaml"


class AblationError(RuntimeError):
    """A sweep of the table failed (its own output says why)."""


@dataclass(frozen=True)
class Ablation:
    title: str
    tables: tuple[str, ...]  # experiment= configs, one multirun each
    steps: int  # training steps of every row
    videos: int  # validation videos (the first of the generated eval split)


def find_ablations(root: Path = EXPERIMENTS_DIR) -> dict[str, Ablation]:
    """Every ``<root>/<reader>/ablation.yaml``, by reader folder name."""
    found = {}
    for path in sorted(root.glob(f"*/{ABLATION_FILE}")):
        raw = yaml.safe_load(path.read_text()) or {}
        missing = {"title", "tables", "steps", "videos"} - set(raw)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}")
        found[path.parent.name] = Ablation(
            str(raw["title"]), tuple(raw["tables"]), int(raw["steps"]), int(raw["videos"])
        )
    return found


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


def shown(path: Path) -> str:
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
    ablation = find_ablations()[paper]
    entries = load_paper(EXPERIMENTS_DIR / paper / "paper.yaml")
    runs = find_runs([sweep_root])
    for line in duplicate_seed_warnings(group_by_seed(runs)):
        print(f"vos.ablate: warning: {line}", file=sys.stderr)
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
        f"Run folders: `{shown(sweep_root)}`, from",
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
    write_text_atomic(markdown, "\n".join(lines))
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
    ablation = find_ablations()[paper]
    root = sweep_root / paper
    commands = [
        train_command(
            table,
            steps or ablation.steps,
            videos or ablation.videos,
            Path(shown(root / table)),
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
                raise AblationError(f"{paper}: the sweep failed: {shlex.join(command)}")
    argv = argv if argv is not None else [paper]
    command = f"`python -m vos.ablate {shlex.join(argv)}`"
    if argv == [paper]:
        command += f" (`make ablate PAPER={paper}`)"
    minutes = None if report_only else (time.perf_counter() - started) / 60
    return write_results(paper, root, results_dir or EXPERIMENTS_DIR / paper, command, minutes)
