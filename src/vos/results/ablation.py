"""A paper's ablation table at the tiny CPU scale: its ``experiment=`` sweeps run as Hydra
multiruns, then ``experiments/<paper>/results.md`` (the command, the date, the scale, the table
with the paper's J&F beside ours) and ``results.png`` (the figure of `vos.results.figures`).

A reader's ablation is its own file, ``experiments/<reader>/ablation.yaml`` (found by
`find_ablations`; no list in the code names the readers)::

    title: "RMNet Table 5: memory and query regions"
    tables: [rmnet_table5]     # experiment= configs, one multirun each
    steps: 200                 # training steps of every row
    videos: 16                 # validation videos (the first of the generated eval split)
    seeds: [0, 1, 2]           # every row trains once per seed (default [0])
    main:                      # the paper's main comparison: labels of paper.yaml entries
      row: "Table 5: regional/regional"
      baseline: "Table 5: global/global"

beside ``experiments/<reader>/paper.yaml``, the paper's rows for `vos.results.tables`.

Sweeps resume: each job runs with ``resume=auto``, so the same command run again skips the
jobs that finished and continues the ones that were stopped; ``--report-only`` writes the
results from whatever has finished. A sweep folder run with other settings (steps, videos,
seeds, overrides) is moved aside, never deleted. The minutes each table took (summed over
sittings) are printed and kept in ``<sweep root>/<paper>/minutes.json``.

results.md states the main comparison: our difference with its paired bootstrap interval
beside the paper's difference, and whether the interval resolves it (it excludes 0 and is
narrower than the paper's difference) or how many times more seeds x videos it would need
(an interval narrows as one over the square root of the samples).
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
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
from vos.results.intervals import samples_to_narrow
from vos.results.runs import Run, duplicate_seed_warnings, find_runs, group_by_seed
from vos.results.tables import difference, load_paper, markdown_table, paper_entry, summarise

ABLATION_FILE = "ablation.yaml"


class AblationError(RuntimeError):
    """A sweep of the table failed (its own output says why)."""


@dataclass(frozen=True)
class Ablation:
    title: str
    tables: tuple[str, ...]  # experiment= configs, one multirun each
    steps: int  # training steps of every row
    videos: int  # validation videos (the first of the generated eval split)
    seeds: tuple[int, ...] = (0,)  # every row trains once per seed
    main: tuple[str, str] | None = None  # (row, baseline): labels of paper.yaml entries


def find_ablations(root: Path = EXPERIMENTS_DIR) -> dict[str, Ablation]:
    """Every ``<root>/<reader>/ablation.yaml``, by reader folder name."""
    found = {}
    for path in sorted(root.glob(f"*/{ABLATION_FILE}")):
        raw = yaml.safe_load(path.read_text()) or {}
        missing = {"title", "tables", "steps", "videos"} - set(raw)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}")
        main = raw.get("main")
        if main is not None and set(main) != {"row", "baseline"}:
            raise ValueError(f"{path}: main needs exactly row and baseline; got {sorted(main)}")
        seeds = tuple(int(seed) for seed in raw.get("seeds", [0]))
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"{path}: seeds must be distinct and at least one; got {seeds}")
        found[path.parent.name] = Ablation(
            str(raw["title"]),
            tuple(raw["tables"]),
            int(raw["steps"]),
            int(raw["videos"]),
            seeds,
            None if main is None else (str(main["row"]), str(main["baseline"])),
        )
    return found


# The tiny CPU scale of every paper: the defaults of `make train` (model/size=tiny, generated
# videos at 128x224, batch 4, 3-frame clips), one validation at the end, CSV logs.
SCALE = ["logger=csv"]


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def train_command(
    table: str,
    steps: int,
    videos: int,
    sweep_dir: Path,
    extra: list[str],
    seeds: tuple[int, ...] = (0,),
) -> list[str]:
    """``vos.train``'s arguments for one table's multirun; ``extra`` overrides win."""
    ours = [
        f"experiment={table}",
        *SCALE,
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        f"data.val_videos={videos}",
        *([f"seed={','.join(str(seed) for seed in seeds)}"] if seeds != (0,) else []),
        "resume=auto",
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


def main_comparison(
    ablation: Ablation, runs: list[Run], entries: list[dict], level: float = 0.95
) -> list[str]:
    """results.md's paragraph on the paper's main comparison (empty without ``main``): our
    difference and its paired interval beside the paper's, and whether the budget resolves
    it."""
    if ablation.main is None:
        return []
    row_label, base_label = ablation.main
    by_label = {entry.get("label"): entry for entry in entries}
    for label in ablation.main:
        if label not in by_label:
            raise ValueError(f"main: no paper.yaml entry labelled {label!r}")
    paper_difference = float(by_label[row_label]["J&F"]) - float(by_label[base_label]["J&F"])
    heading = f"**Main comparison**: {row_label} minus {base_label}"
    rows = summarise(runs, level=level)
    found = {}
    for row in rows:
        entry = paper_entry(row.group, entries)
        if entry is not None and entry.get("label") in (row_label, base_label):
            found[entry["label"]] = row
    if len(found) < 2 or any(found[label].scores is None for label in ablation.main):
        missing = [label for label in ablation.main if label not in found]
        return [f"{heading}: not measured (no finished runs for {', '.join(missing)}).", ""]
    row, base = found[row_label], found[base_label]
    ours = difference(row, base, level, 2000)
    seeds = min(len(row.group.runs), len(base.group.runs))
    videos = 1 if row.scores.videos is None else len(row.scores.videos)
    text = (
        f"{heading}, J&F: the paper {paper_difference:+.3f}; here {ours.value:+.3f}"
        f" ({seeds} seed{'s' if seeds > 1 else ''} x {videos} videos"
    )
    if ours.half_width is None:
        return [f"{text}, no interval: one seed and no per-video scores).", ""]
    text += f", {level * 100:g}% interval [{ours.low:+.3f}, {ours.high:+.3f}])."
    needed = samples_to_narrow(ours.half_width, paper_difference)
    if ours.distinguishable and ours.half_width < abs(paper_difference):
        verdict = (
            "The interval excludes 0 and is narrower than the paper's difference: this budget "
            "resolves the comparison"
            + (
                "; the sign agrees with the paper."
                if ours.value * paper_difference > 0
                else "; the sign is the opposite of the paper's."
            )
        )
    else:
        verdict = (
            f"The budget cannot resolve it: the interval's half width {ours.half_width:.3f} is "
            f"{ours.half_width / abs(paper_difference):.1f}x the paper's difference"
            + ("" if not ours.distinguishable else " (though it excludes 0)")
            + f"; an interval that narrow would need about {needed:.0f}x the seeds x videos "
            "(intervals narrow as one over the square root of the samples)."
        )
    return [text, verdict, ""]


def check_main(paper: str, ablation: Ablation) -> None:
    """The main comparison names two rows of the paper's ``paper.yaml``."""
    if ablation.main is None:
        return
    labels = {entry.get("label") for entry in load_paper(EXPERIMENTS_DIR / paper / "paper.yaml")}
    for label in ablation.main:
        if label not in labels:
            raise ValueError(
                f"experiments/{paper}/{ABLATION_FILE}: main names {label!r}, which no entry of "
                f"experiments/{paper}/paper.yaml is labelled"
            )


def read_minutes(root: Path) -> dict[str, float]:
    """Minutes each table's sweeps took, summed over sittings (``minutes.json``)."""
    path = root / "minutes.json"
    return json.loads(path.read_text()) if path.is_file() else {}


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
    per_table = read_minutes(sweep_root)
    timing = (
        "Training and validation time per table, summed over sittings: "
        + ", ".join(f"`{table}` {value:.1f} min" for table, value in per_table.items())
        + "."
        if per_table
        else ""
    )
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
        *main_comparison(ablation, runs, entries),
        *([timing, ""] if timing else []),
        f"![J&F against the memory read's time, and per row]({figure.name})",
        "",
    ]
    write_text_atomic(markdown, "\n".join(lines))
    return markdown, figure


def ablate(
    paper: str,
    steps: int | None = None,
    videos: int | None = None,
    seeds: tuple[int, ...] | None = None,
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
    check_main(paper, ablation)  # before hours of sweeps, not after
    root = sweep_root / paper
    commands = {
        table: train_command(
            table,
            steps or ablation.steps,
            videos or ablation.videos,
            Path(shown(root / table)),
            list(extra or []),
            tuple(seeds) if seeds else ablation.seeds,
        )
        for table in ablation.tables
    }
    if dry_run:
        print("\n".join("python " + shlex.join(command) for command in commands.values()))
        return None
    started = time.perf_counter()
    if not report_only:
        minutes = read_minutes(root)
        for table, command in commands.items():
            set_aside_if_different(root / table, command)
            print(f"vos.ablate: python {shlex.join(command)}", flush=True)
            table_started = time.perf_counter()
            try:
                failed = subprocess.run([sys.executable, *command]).returncode != 0
            finally:  # a sitting stopped mid-sweep still counts its minutes
                spent = (time.perf_counter() - table_started) / 60
                minutes[table] = minutes.get(table, 0.0) + spent
                root.mkdir(parents=True, exist_ok=True)
                write_text_atomic(root / "minutes.json", json.dumps(minutes, indent=1))
                print(
                    f"vos.ablate: {table}: {spent:.1f} min this sitting, {minutes[table]:.1f} in all"
                )
            if failed:
                raise AblationError(
                    f"{paper}: the sweep failed: {shlex.join(command)} (run the same command "
                    "again to resume it)"
                )
    argv = argv if argv is not None else [paper]
    command = f"`python -m vos.ablate {shlex.join(argv)}`"
    if argv == [paper]:
        command += f" (`make ablate PAPER={paper}`)"
    minutes_now = None if report_only else (time.perf_counter() - started) / 60
    return write_results(paper, root, results_dir or EXPERIMENTS_DIR / paper, command, minutes_now)


def sweep_settings(command: list[str]) -> list[str]:
    """The overrides of a sweep that decide its rows: all but where it writes."""
    return sorted(o for o in command[3:] if not o.startswith("hydra.sweep.dir="))


def set_aside_if_different(sweep_dir: Path, command: list[str]) -> None:
    """A sweep folder written with other settings would mix its rows into this table: move it
    to ``<folder>.replaced-<time>`` (never delete what a run wrote)."""
    record = sweep_dir / "multirun.yaml"
    if not record.is_file():
        return
    task = [str(o) for o in OmegaConf.load(record).hydra.overrides.task]
    if sorted(o for o in task if not o.startswith("hydra.")) == [
        o for o in sweep_settings(command) if not o.startswith("hydra.")
    ]:
        return
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = sweep_dir.with_name(f"{sweep_dir.name}.replaced-{stamp}")
    sweep_dir.rename(aside)
    print(f"vos.ablate: {sweep_dir} was run with other settings; moved to {aside}")
