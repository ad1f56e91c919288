"""A figure of runs: J&F against the memory read's time, and J&F per row beside the paper's."""

from __future__ import annotations

import math
import re
from pathlib import Path

from vos.files import write_atomic
from vos.results.runs import Run, row_labels
from vos.results.tables import COLUMNS, paper_entry


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
    return write_atomic(path, lambda tmp: figure.savefig(tmp, dpi=120, format="png"))
