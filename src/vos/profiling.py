"""Timers and peak-memory probes: the one place the suite measures time and memory.

On CUDA every measurement synchronises the device around the measured block (kernels run
asynchronously) and memory is the caching allocator's peak; on the CPU memory is the growth of
the process's resident set, sampled by a thread (PyTorch's CPU kernels release the GIL, so the
sampler sees their allocations).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the device's queued work (no-op off CUDA)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def current_rss_mb() -> float:
    """Resident memory of this process now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


class RssSampler:
    """Peak growth of the resident set over a ``with`` block, sampled every ``interval_s``."""

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
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, current_rss_mb())

    @property
    def peak_growth_mb(self) -> float:
        return self.peak_mb - self.base_mb


class PeakMemory:
    """Peak memory over a ``with`` block, in MiB (``peak_mb`` once the block has run).

    ``growth=True``: what the block added at its peak (CUDA: the allocator's peak above what
    was allocated when it started; CPU: the resident set's peak above its size then).
    ``growth=False``: the whole peak while the block ran (CUDA: the allocator's peak, model and
    optimiser included; CPU: the process's resident set at its largest)."""

    def __init__(self, device: torch.device | str, *, growth: bool = False, interval_s=0.005):
        self.device = torch.device(device)
        self.growth = growth
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._base = 0
        self._sampler: RssSampler | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device) if self.growth else 0
        else:
            self._sampler = RssSampler(interval_s=self.interval_s).__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) - self._base
            self.peak_mb = max(0.0, peak / 2**20)
        else:
            self._sampler.__exit__(*exc)
            peak = self._sampler.peak_growth_mb if self.growth else self._sampler.peak_mb
            self.peak_mb = max(0.0, peak)


class FramePeakMemory:
    """Peak memory since the previous call: CUDA's allocator peak on a GPU, the resident set
    on the CPU (sampled when called), in MiB."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def __call__(self) -> float:
        if self.device.type != "cuda":
            return current_rss_mb()
        peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        torch.cuda.reset_peak_memory_stats(self.device)
        return peak


class Stopwatch:
    """Accumulates the wall time of the blocks it wraps (``with stopwatch(): ...``),
    synchronising the device around each."""

    def __init__(self, device: torch.device | str | None = None):
        self.device = device
        self.seconds = 0.0

    @contextmanager
    def __call__(self) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds += time.perf_counter() - start


def time_calls(
    call: Callable[[], Any],
    repeats: int,
    device: torch.device | str | None = None,
    *,
    warmup: int = 1,
    setup: Callable[[], Any] | None = None,
) -> tuple[float, float]:
    """Median milliseconds of ``repeats`` calls after ``warmup`` untimed ones, and the peak
    memory one more call added (MiB, `PeakMemory` with ``growth=True``). ``setup`` runs
    before every call, untimed (e.g. to restore a state the call changes).

    The peak is taken in a call of its own: on the CPU it is sampled by a thread that polls
    every millisecond, which on a machine of few cores competes with the calls' own threads
    (docs/benchmarks.md, "Timing without the memory sampler")."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    for _ in range(warmup):
        if setup is not None:
            setup()
        call()
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - start)
    if setup is not None:
        setup()
    with PeakMemory(device, growth=True, interval_s=0.001) as memory:
        call()
        synchronize(device)
    return statistics.median(times) * 1000, memory.peak_mb
