"""``python -m vos.report DIR [DIR ...]``: training runs as one markdown table.

Every folder below the given ones that holds a ``metrics.json`` (written by ``vos.train`` at
the end of a run) is a row. A row is named by the command-line overrides of its run
(``.hydra/overrides.yaml``) that differ between the runs, so a Hydra multirun folder reads as
the table of its sweep. Columns: J&F, J-Mean, F-Mean, J&F on the videos with distractors,
validation frames per second, milliseconds per memory read, parameters (millions).

``--paper FILE`` adds the paper's numbers where a row matches: a YAML list of
``{match: {override key: value, ...}, label: "...", "J&F": 0.835}`` entries (see
``experiments/*/paper.yaml``); a row matches an entry when its overrides hold every pair.
``--out FILE`` writes the table (and prints it either way).
"""

from __future__ import annotations

import argparse
import json
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


def paper_value(run: Run, entries: list[dict], column: str = "J&F") -> str:
    for entry in entries:
        match = entry.get("match", {})
        if all(k in run.overrides and _same(v, run.overrides[k]) for k, v in match.items()):
            value = entry.get(column)
            return "" if value is None else f"{float(value):.3f}"
    return ""


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
    args = parser.parse_args(argv)
    try:
        runs = find_runs(args.folders)
        table = markdown_table(runs, load_paper(args.paper) if args.paper else None)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"vos.report: error: {error}") from error
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
