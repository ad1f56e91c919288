"""Shared pieces of the benchmarks: memory probes, records, printing."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch


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


def current_rss_mb() -> float:
    """Resident memory of this process now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


class FramePeakMemory:
    """Peak memory since the previous call: CUDA's allocator peak on a GPU, the resident
    set size on the CPU (sampled when called)."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def __call__(self) -> float:
        if self.device.type != "cuda":
            return current_rss_mb()
        peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        torch.cuda.reset_peak_memory_stats(self.device)
        return peak


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
    Console().print(table)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)
