"""Runs as one markdown table: a row per config (its seeds pooled, `vos.results.runs`), its J&F
with a bootstrap interval over seeds and videos (`vos.results.intervals`), optionally the
difference to a baseline row with a paired interval, and the paper's numbers where a row
matches one of its entries (``experiments/<reader>/paper.yaml``: ``{match: {override: value},
label, "J&F"}``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from vos.results.intervals import Interval, mean_interval, paired_difference
from vos.results.runs import GroupScores, Run, RunGroup, group_by_seed, row_labels

COLUMNS = {
    "J&F": "val/J&F-Mean",
    "J": "val/J-Mean",
    "F": "val/F-Mean",
    "J&F distractors": "val/J&F-Mean/distractors",
    "fps": "val/fps",
    "read ms/frame": "val/read_ms_per_frame",
    "params (M)": "params_m",
}
NO_PER_VIDEO = "–"  # the videos cell of a row whose interval could only resample seeds
NOT_DISTINGUISHABLE = "≈"


@dataclass
class Row:
    """One config: its runs, its J&F with an interval and, given a baseline, the difference
    to it (None for the baseline itself and rows without J&F)."""

    label: str
    group: RunGroup
    scores: GroupScores | None
    interval: Interval | None
    difference: Interval | None = None
    is_baseline: bool = False


def summarise(
    runs: list[Run],
    baseline: str | None = None,
    level: float = 0.95,
    resamples: int = 2000,
) -> list[Row]:
    """The runs grouped by seed, each group's J&F interval and, when ``baseline`` (a
    substring of exactly one row's label) is given, each row's paired difference to it."""
    groups = group_by_seed(runs)
    rows = []
    for label, group in zip(row_labels(groups), groups):
        scores = group.scores(label)
        interval = None
        if scores is not None:
            weights = scores.objects
            interval = mean_interval(scores.scores, level, resamples, video_weights=weights)
        rows.append(Row(label, group, scores, interval))
    if baseline is None:
        return rows
    base = rows[baseline_index([row.label for row in rows], baseline)]
    base.is_baseline = True
    if base.scores is None:
        raise ValueError(f"--baseline {baseline!r}: row {base.label!r} has no J&F")
    for row in rows:
        if row is not base and row.scores is not None:
            row.difference = difference(row, base, level, resamples)
    return rows


def baseline_index(labels: list[str], substring: str) -> int:
    """The one row whose label holds ``substring``."""
    matches = [index for index, label in enumerate(labels) if substring in label]
    if len(matches) != 1:
        found = "no row" if not matches else f"{len(matches)} rows"
        raise ValueError(f"--baseline {substring!r} matches {found}; rows: {'; '.join(labels)}")
    return matches[0]


def difference(row: Row, base: Row, level: float, resamples: int) -> Interval:
    """``row`` minus ``base``: paired by video when both hold per-video scores, else the
    runs' J&F, resampling seeds only."""
    names = (row.label, base.label)
    if row.scores.videos is not None and base.scores.videos is not None:
        return paired_difference(
            row.scores.scores,
            base.scores.scores,
            row.scores.videos,
            base.scores.videos,
            names=names,
            level=level,
            resamples=resamples,
            video_weights=row.scores.objects,
        )
    return paired_difference(
        row.scores.run_level, base.scores.run_level, names=names, level=level, resamples=resamples
    )


def _same(a: object, b: str) -> bool:
    return str(a).lower() == str(b).lower()


def paper_entry(run: Run | RunGroup, entries: list[dict]) -> dict | None:
    """The first of the paper's entries whose ``match`` pairs the run's overrides all hold."""
    for entry in entries:
        match = entry.get("match", {})
        if all(k in run.overrides and _same(v, run.overrides[k]) for k, v in match.items()):
            return entry
    return None


def paper_value(run: Run | RunGroup, entries: list[dict], column: str = "J&F") -> str:
    entry = paper_entry(run, entries)
    value = None if entry is None else entry.get(column)
    return "" if value is None else f"{float(value):.3f}"


def percent(level: float) -> str:
    return f"{level * 100:g}%"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _interval_cell(interval: Interval | None) -> str:
    if interval is None:
        return ""
    return "none" if interval.low is None else f"[{interval.low:.3f}, {interval.high:.3f}]"


def _videos_cell(scores: GroupScores | None) -> str:
    if scores is None:
        return ""
    return NO_PER_VIDEO if scores.videos is None else str(len(scores.videos))


def _difference_cell(row: Row) -> str:
    if row.is_baseline:
        return "baseline"
    interval = row.difference
    if interval is None:
        return ""
    if interval.low is None:
        return f"{interval.value:+.3f} (no interval)"
    mark = "" if interval.distinguishable else f"{NOT_DISTINGUISHABLE} "
    return f"{mark}{interval.value:+.3f} [{interval.low:+.3f}, {interval.high:+.3f}]"


def markdown_table(
    runs: list[Run],
    paper: list[dict] | None = None,
    baseline: str | None = None,
    level: float = 0.95,
    resamples: int = 2000,
) -> str:
    """The table, a row per config (see `summarise`), then a note under it for each mark in
    it: rows without per-video scores, rows not distinguishable from the baseline."""
    rows = summarise(runs, baseline, level, resamples)
    header = [
        "run",
        *(["paper J&F"] if paper else []),
        "J&F",
        f"{percent(level)} CI",
        "seeds",
        "videos",
        *([f"Δ vs baseline [{percent(level)} CI]"] if baseline else []),
        *(name for name in COLUMNS if name != "J&F"),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.label]
        if paper:
            cells.append(paper_value(row.group, paper))
        scores = row.scores
        cells += [
            _number(None if row.interval is None else row.interval.value),
            _interval_cell(row.interval),
            "" if scores is None else str(len(scores.run_level)),
            ""
            if scores is None
            else NO_PER_VIDEO
            if scores.videos is None
            else str(len(scores.videos)),
        ]
        if baseline:
            cells.append(_difference_cell(row))
        cells += [_number(row.group.mean(key)) for name, key in COLUMNS.items() if name != "J&F"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = _notes(rows, level)
    return "\n".join(lines + [line for note in notes for line in ("", note)])


def _notes(rows: list[Row], level: float) -> list[str]:
    notes = []
    if any(row.scores is not None and row.scores.videos is None for row in rows):
        notes.append(
            f"{NO_PER_VIDEO}: no per-video scores in the row's metrics.json (written before "
            "vos.train stored them): its interval resamples seeds only, and one seed has none."
        )
    differences = [row.difference for row in rows if row.difference is not None]
    if differences:
        base = next(row.label for row in rows if row.is_baseline)
        notes.append(
            f"Δ: J&F minus the baseline's ({base}); its interval resamples the videos once for "
            "both rows (paired by video) and each row's seeds, or only the seeds where a side "
            f"has no per-video scores ({NO_PER_VIDEO})."
        )
    if any(interval.distinguishable is False for interval in differences):
        notes.append(
            f"{NOT_DISTINGUISHABLE}: the {percent(level)} interval of the difference includes 0: "
            "not distinguishable from the baseline."
        )
    if any(interval.low is None for interval in differences):
        notes.append(
            f"no interval: where a side lacks per-video scores ({NO_PER_VIDEO}) only seeds are "
            "resampled, and a side with a single seed shows no spread."
        )
    return notes


def load_paper(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--paper file does not exist: {path}")
    entries = yaml.safe_load(path.read_text())
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{path}: expected a YAML list of {{match: {{...}}, J&F: ...}} entries")
    return entries
