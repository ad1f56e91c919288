"""Result files and tables: DAVIS's two CSVs (written atomically) and readable text tables.

Shared by ``python -m vos.evaluate`` and ``python -m vos.eval``. Results are a `JAndF` or a
pair (global results, per-sequence rows), `ResultTables`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from vos.files import write_text_atomic
from vos.metrics.metric import JAndF

GLOBAL_COLUMNS: tuple[str, ...] = (
    "J&F-Mean",
    "J-Mean",
    "J-Recall",
    "J-Decay",
    "F-Mean",
    "F-Recall",
    "F-Decay",
)
PER_SEQUENCE_COLUMNS: tuple[str, ...] = ("Sequence", "J-Mean", "F-Mean")
GLOBAL_RESULTS_FILE = "global_results.csv"
PER_SEQUENCE_RESULTS_FILE = "per-sequence_results.csv"
FACTORS_FILE = "factors.json"

ResultTables = tuple[Mapping[str, float], Sequence[Mapping[str, object]]]


def _tables(results: JAndF | ResultTables) -> ResultTables:
    if isinstance(results, JAndF):
        return results.compute(), results.per_sequence()
    global_results, per_sequence = results
    return global_results, per_sequence


def _format_number(value: object) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def write_results(output_dir: str | Path, results: JAndF | ResultTables) -> tuple[Path, Path]:
    """Write ``global_results.csv`` (``J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,
    F-Decay``) and ``per-sequence_results.csv`` (``Sequence,J-Mean,F-Mean``), atomically.

    ``results`` is a `JAndF` or a pair (global results, per-sequence rows). Per-factor
    scores are not written (the columns are DAVIS's). Returns the two paths.
    """
    global_results, per_sequence = _tables(results)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    missing = [column for column in GLOBAL_COLUMNS if column not in global_results]
    if missing:
        raise KeyError(f"global results lack the columns {missing}")

    global_lines = [
        ",".join(GLOBAL_COLUMNS),
        ",".join(_format_number(float(global_results[column])) for column in GLOBAL_COLUMNS),
    ]
    sequence_lines = [",".join(PER_SEQUENCE_COLUMNS)]
    for row in per_sequence:
        name = str(row["Sequence"])
        if "," in name or '"' in name:
            name = '"' + name.replace('"', '""') + '"'
        sequence_lines.append(
            ",".join(
                [name, _format_number(float(row["J-Mean"])), _format_number(float(row["F-Mean"]))]
            )
        )
    global_path = output_dir / GLOBAL_RESULTS_FILE
    sequence_path = output_dir / PER_SEQUENCE_RESULTS_FILE
    write_text_atomic(global_path, "\n".join(global_lines) + "\n")
    write_text_atomic(sequence_path, "\n".join(sequence_lines) + "\n")
    return global_path, sequence_path


def write_factors(output_dir: str | Path, metric: JAndF) -> Path | None:
    """Write ``factors.json``, each scored video's known factors (``{video: {factor: bool}}``,
    the format a DAVIS-layout root's ``factors.json`` has), beside the CSVs, atomically; so
    that a folder's per-sequence scores can be split by factor later
    (``experiments/compare_evals.py --factor``). Nothing is written, and None returned, when
    no video has a known factor."""
    factors = {
        str(row["video"]): {name: row[name] for name in metric.factors if row.get(name) is not None}
        for row in metric.per_video()
    }
    if not any(factors.values()):
        return None
    path = Path(output_dir) / FACTORS_FILE
    return write_text_atomic(path, json.dumps(factors, indent=1, sort_keys=True) + "\n")


def _format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], label_column: bool = True
) -> list[str]:
    """Aligned text columns: numbers right-aligned, the first column left-aligned when it
    holds labels."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = []
    for cells in [header, *rows]:
        aligned = [cell.rjust(width) for cell, width in zip(cells, widths)]
        if label_column:
            aligned[0] = cells[0].ljust(widths[0])
        lines.append("  ".join(aligned))
    return lines


def format_results(results: JAndF | ResultTables, title: str = "") -> str:
    """Readable tables: the global numbers, per-factor J&F (if any), then per sequence."""
    global_results, per_sequence = _tables(results)
    suffix = f" for {title}" if title else ""
    lines = [f"---------- Global results{suffix} ----------"]
    lines += _format_table(
        GLOBAL_COLUMNS,
        [[f"{float(global_results[column]):.3f}" for column in GLOBAL_COLUMNS]],
        label_column=False,
    )
    factor_rows = [
        [name, f"{float(value):.3f}"]
        for name, value in global_results.items()
        if name not in GLOBAL_COLUMNS
    ]
    if factor_rows:
        lines += ["", f"---------- J&F by factor{suffix} ----------"]
        lines += _format_table(["Subset", "J&F-Mean"], factor_rows)
    lines += ["", f"---------- Per-sequence results{suffix} ----------"]
    lines += _format_table(
        PER_SEQUENCE_COLUMNS,
        [
            [str(row["Sequence"]), f"{float(row['J-Mean']):.3f}", f"{float(row['F-Mean']):.3f}"]
            for row in per_sequence
        ],
    )
    unscored = getattr(results, "unscored", [])
    if unscored:
        shown = ", ".join(unscored[:5]) + (
            f" and {len(unscored) - 5} more" if len(unscored) > 5 else ""
        )
        lines += [
            "",
            f"Left out of the means, with no frame to score (DAVIS scores neither an object's "
            f"given frame nor the last): {shown}",
        ]
    return "\n".join(lines)
