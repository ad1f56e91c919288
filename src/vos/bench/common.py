"""Shared pieces of the benchmarks: memory probes, records, printing."""

from __future__ import annotations

import json
import os
import threading
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


class RssSampler:
    """Peak growth of the resident set over a ``with`` block, sampled every millisecond by a
    thread (PyTorch's CPU kernels release the GIL, so the sampler sees their allocations)."""

    def __init__(self, interval_s: float = 0.001):
        self.interval_s = interval_s
        self.base_mb = 0.0
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, current_rss_mb())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self.base_mb = self.peak_mb = current_rss_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, current_rss_mb())

    @property
    def peak_growth_mb(self) -> float:
        return self.peak_mb - self.base_mb


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
    Console(width=max(160, Console().width)).print(table)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items() if k not in ("device", "dtype"))
    return str(value)
