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
import json
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

COLUMNS = {
    "J&F": "val/J&F-Mean",
    "J": "val/J-Mean",
    "F": "val/F-Mean",
    "J&F distractors": "val/J&F-Mean/distractors",
    "fps": "val/fps",
    "read ms/frame": "val/read_ms_per_frame",
    "params (M)": "params_m",
}
IGNORED_OVERRIDES = ("logger", "run_name", "hydra.", "trainer.devices", "data.num_workers")


@dataclass
class Run:
    folder: Path
    metrics: dict[str, float]
    overrides: dict[str, str] = field(default_factory=dict)


def _parse_overrides(lines: Iterable[str]) -> dict[str, str]:
    parsed = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        key = key.lstrip("+~")
        if not key.startswith(IGNORED_OVERRIDES):
            parsed[key] = value
    return parsed


def find_runs(roots: Iterable[str | Path]) -> list[Run]:
    runs = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"no such run folder: {root}")
        for metrics_file in sorted(root.rglob("metrics.json")):
            try:
                metrics = json.loads(metrics_file.read_text())
            except json.JSONDecodeError as error:
                raise ValueError(f"{metrics_file} is not valid JSON: {error}") from error
            overrides_file = metrics_file.parent / ".hydra" / "overrides.yaml"
            overrides = {}
            if overrides_file.is_file():
                overrides = _parse_overrides(yaml.safe_load(overrides_file.read_text()) or [])
            runs.append(Run(metrics_file.parent, metrics, overrides))
    if not runs:
        raise FileNotFoundError(
            f"no metrics.json below {', '.join(str(r) for r in roots)}: not a vos.train run folder"
        )
    return runs


def row_labels(runs: list[Run]) -> list[str]:
    """The overrides that differ between runs (all of them for a single run)."""
    keys = sorted({k for run in runs for k in run.overrides})
    varying = [k for k in keys if len({run.overrides.get(k) for run in runs}) > 1]
    shown = varying or keys
    labels = []
    for run in runs:
        parts = [f"{k}={run.overrides[k]}" for k in shown if k in run.overrides]
        labels.append(", ".join(parts) or run.folder.name)
    return labels


def _same(a: object, b: str) -> bool:
    return str(a).lower() == str(b).lower()


def paper_entry(run: Run, entries: list[dict]) -> dict | None:
    """The first of the paper's entries whose ``match`` pairs the run's overrides all hold."""
    for entry in entries:
        match = entry.get("match", {})
        if all(k in run.overrides and _same(v, run.overrides[k]) for k, v in match.items()):
            return entry
    return None


def paper_value(run: Run, entries: list[dict], column: str = "J&F") -> str:
    entry = paper_entry(run, entries)
    value = None if entry is None else entry.get(column)
    return "" if value is None else f"{float(value):.3f}"


def markdown_table(runs: list[Run], paper: list[dict] | None = None) -> str:
    labels = row_labels(runs)
    header = ["run", *(["paper J&F"] if paper else []), *COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, run in zip(labels, runs):
        cells = [label]
        if paper:
            cells.append(paper_value(run, paper))
        for key in COLUMNS.values():
            value = run.metrics.get(key)
            cells.append("" if value is None else f"{float(value):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _short(label: str) -> str:
    """``model.reader.memory_region=false`` -> ``memory_region=false`` (figure labels)."""
    return re.sub(r"(?:[\w/]+[./])+(?=\w+=)", "", label)


def _number(numbers: dict, key: str) -> float:
    value = numbers.get(key)
    return math.nan if value is None else float(value)


def _values(numbers: list[float]) -> list[str]:
    return ["" if math.isnan(v) else f"{v:.3f}" for v in numbers]


def save_figure(
    runs: list[Run], path: str | Path, paper: list[dict] | None = None, title: str | None = None
) -> Path:
    """A PNG of the runs: J&F against the read's ms per frame (left; points numbered as the
    rows) and J&F per row, the paper's beside ours where a row matches (right)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, no display needed

    entries = [paper_entry(run, paper) if paper else None for run in runs]
    names = [
        entry["label"] if entry and entry.get("label") else _short(label)
        for entry, label in zip(entries, row_labels(runs))
    ]
    ours = [_number(run.metrics, COLUMNS["J&F"]) for run in runs]
    read_ms = [_number(run.metrics, COLUMNS["read ms/frame"]) for run in runs]
    theirs = [_number(entry or {}, "J&F") for entry in entries]

    height = max(3.5, 0.5 * len(runs) + 1.5)
    figure = Figure(figsize=(12, height), layout="constrained")
    scatter, bars = figure.subplots(1, 2, width_ratios=[1, 1.3])
    for index, (x, y) in enumerate(zip(read_ms, ours), start=1):
        if math.isnan(x) or math.isnan(y):
            continue
        scatter.scatter([x], [y], color="tab:blue")
        scatter.annotate(str(index), (x, y), xytext=(4, 3), textcoords="offset points")
    scatter.set_xlim(left=0)
    scatter.set_xlabel("memory read (ms per frame)")
    scatter.set_ylabel("J&F (ours)")
    scatter.set_title("J&F vs reader time")
    scatter.grid(alpha=0.3)

    rows = list(range(len(runs)))
    has_paper = any(not math.isnan(v) for v in theirs)
    width = 0.4 if has_paper else 0.7
    offset = width / 2 if has_paper else 0.0
    drawn = bars.barh(
        [r - offset for r in rows], ours, height=width, label="ours", color="tab:blue"
    )
    bars.bar_label(drawn, labels=_values(ours), padding=2, fontsize=8)
    if has_paper:
        drawn = bars.barh(
            [r + offset for r in rows], theirs, height=width, label="paper", color="tab:gray"
        )
        bars.bar_label(drawn, labels=_values(theirs), padding=2, fontsize=8)
        # above the axes, beside the title: bars of any length leave it readable
        bars.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False)
    bars.set_yticks(rows, [f"{i}. {name}" for i, name in enumerate(names, start=1)])
    bars.invert_yaxis()
    bars.set_xlim(0, 1)
    bars.set_xlabel("J&F")
    bars.set_title("J&F per row", loc="left")
    bars.grid(axis="x", alpha=0.3)
    if title:
        figure.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, format="png")
    return path


def load_paper(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--paper file does not exist: {path}")
    entries = yaml.safe_load(path.read_text())
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{path}: expected a YAML list of {{match: {{...}}, J&F: ...}} entries")
    return entries


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
    try:
        runs = find_runs(args.folders)
        paper = load_paper(args.paper) if args.paper else None
        table = markdown_table(runs, paper)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"vos.report: error: {error}") from error
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    figure = args.figure or (Path(args.out).with_suffix(".png") if args.out else None)
    if figure:
        path = save_figure(runs, figure, paper, args.title)
        print(f"vos.report: figure written to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
