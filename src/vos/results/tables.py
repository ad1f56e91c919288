"""Runs as one markdown table, with the paper's numbers where a row matches one of its entries
(``experiments/<reader>/paper.yaml``: ``{match: {override: value}, label, "J&F"}``)."""

from __future__ import annotations

from pathlib import Path

import yaml

from vos.results.runs import Run, row_labels

COLUMNS = {
    "J&F": "val/J&F-Mean",
    "J": "val/J-Mean",
    "F": "val/F-Mean",
    "J&F distractors": "val/J&F-Mean/distractors",
    "fps": "val/fps",
    "read ms/frame": "val/read_ms_per_frame",
    "params (M)": "params_m",
}


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


def load_paper(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--paper file does not exist: {path}")
    entries = yaml.safe_load(path.read_text())
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{path}: expected a YAML list of {{match: {{...}}, J&F: ...}} entries")
    return entries
