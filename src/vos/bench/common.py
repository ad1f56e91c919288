"""Shared pieces of the benchmarks: records and printing them (timers and memory probes are
`vos.profiling`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field


@dataclass
class Record:
    name: str
    setting: dict
    ms: float
    peak_mb: float
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        data = asdict(self)
        extra = data.pop("extra")
        data.update(extra)
        return data


def print_records(records: Sequence[Record], as_json: bool) -> None:
    rows = [r.as_dict() for r in records]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    keys = ["name", "setting", "ms", "peak_mb"] + sorted(
        {k for r in rows for k in r} - {"name", "setting", "ms", "peak_mb"}
    )
    for key in keys:
        table.add_column(key)
    for row in rows:
        table.add_row(*[_fmt(row.get(k, "")) for k in keys])
    Console(width=max(160, Console().width)).print(table)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items() if k not in ("device", "dtype"))
    return str(value)
