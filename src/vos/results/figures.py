"""A figure of runs, a row per config (seeds pooled): J&F with its bootstrap interval as error
bars against the memory read's time, and J&F per row beside the paper's."""

from __future__ import annotations

import math
import re
from pathlib import Path

from vos.files import write_atomic
from vos.results.runs import Run
from vos.results.tables import COLUMNS, Row, paper_entry, percent, summarise


def _short(label: str) -> str:
    """``model.reader.memory_region=false`` -> ``memory_region=false`` (figure labels)."""
    return re.sub(r"(?:[\w/]+[./])+(?=\w+=)", "", label)


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _values(numbers: list[float]) -> list[str]:
    return ["" if math.isnan(v) else f"{v:.3f}" for v in numbers]


def _error_bar(row: Row) -> tuple[float, float] | None:
    """How far the row's interval reaches below and above its J&F (None without one)."""
    interval = row.interval
    if interval is None or interval.low is None:
        return None
    return interval.value - interval.low, interval.high - interval.value


def save_figure(
    runs: list[Run],
    path: str | Path,
    paper: list[dict] | None = None,
    title: str | None = None,
    level: float = 0.95,
    resamples: int = 2000,
) -> Path:
    """A PNG of the runs, a row per config: J&F against the read's ms per frame (left; points
    numbered as the rows) and J&F per row, the paper's beside ours where a row matches
    (right); ours with its ``level`` bootstrap interval as error bars (`summarise`)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, no display needed

    rows = summarise(runs, level=level, resamples=resamples)
    entries = [paper_entry(row.group, paper) if paper else None for row in rows]
    names = [
        entry["label"] if entry and entry.get("label") else _short(row.label)
        for entry, row in zip(entries, rows)
    ]
    ours = [math.nan if row.interval is None else row.interval.value for row in rows]
    read_ms = [_number(row.group.mean(COLUMNS["read ms/frame"])) for row in rows]
    theirs = [_number((entry or {}).get("J&F")) for entry in entries]
    error_bars = [_error_bar(row) for row in rows]

    height = max(3.5, 0.5 * len(rows) + 1.5)
    figure = Figure(figsize=(12, height), layout="constrained")
    scatter, bars = figure.subplots(1, 2, width_ratios=[1, 1.3])
    for index, (x, y, error_bar) in enumerate(zip(read_ms, ours, error_bars), start=1):
        if math.isnan(x) or math.isnan(y):
            continue
        scatter.scatter([x], [y], color="tab:blue")
        if error_bar:
            below, above = error_bar
            scatter.errorbar([x], [y], yerr=[[below], [above]], color="tab:blue", capsize=3)
        scatter.annotate(str(index), (x, y), xytext=(4, 3), textcoords="offset points")
    scatter.set_xlim(left=0)
    scatter.set_xlabel("memory read (ms per frame)")
    scatter.set_ylabel(f"J&F (ours, {percent(level)} interval)")
    scatter.set_title("J&F vs reader time")
    scatter.grid(alpha=0.3)

    positions = list(range(len(rows)))
    has_paper = any(not math.isnan(v) for v in theirs)
    width = 0.4 if has_paper else 0.7
    offset = width / 2 if has_paper else 0.0
    drawn = bars.barh(
        [r - offset for r in positions], ours, height=width, label="ours", color="tab:blue"
    )
    bars.bar_label(drawn, labels=_values(ours), padding=2, fontsize=8)
    for position, value, error_bar in zip(positions, ours, error_bars):
        if error_bar:
            below, above = error_bar
            bars.errorbar(
                [value],
                [position - offset],
                xerr=[[below], [above]],
                fmt="none",
                ecolor="black",
                capsize=3,
            )
    if has_paper:
        drawn = bars.barh(
            [r + offset for r in positions], theirs, height=width, label="paper", color="tab:gray"
        )
        bars.bar_label(drawn, labels=_values(theirs), padding=2, fontsize=8)
        # above the axes, beside the title: bars of any length leave it readable
        bars.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False)
    bars.set_yticks(positions, [f"{i}. {name}" for i, name in enumerate(names, start=1)])
    bars.invert_yaxis()
    bars.set_xlim(0, 1)
    bars.set_xlabel("J&F")
    bars.set_title("J&F per row", loc="left")
    bars.grid(axis="x", alpha=0.3)
    if title:
        figure.suptitle(title)
    return write_atomic(path, lambda tmp: figure.savefig(tmp, dpi=120, format="png"))
