"""Percentile bootstrap intervals for J&F over training seeds and validation videos.

A row of a results table is a config trained with one or more seeds and scored on a set of
videos: its scores are a matrix ``[seeds, videos]``. Both are samples, so the interval resamples
both, independently (a crossed bootstrap): each resample draws seed indices with replacement and,
independently, video indices with replacement, and takes the mean of the selected sub-matrix.
A dimension of size one has nothing to resample: with one seed only videos are resampled (the
interval then says nothing about seed-to-seed variation), with one column (only the run-level
J&F, no per-video scores) only seeds, and with one seed and one column there is no interval.
With few seeds the seed resampling is coarse (three seeds give ten distinct draws).

Videos may be weighted (``video_weights``, e.g. the number of objects in each video, so the
mean is the mean over objects, DAVIS's J&F); a resampled video carries its weight.

Everything is deterministic: the draws come from ``np.random.default_rng(0)`` unless a
generator is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """An estimate (a mean, or a difference of means) and its bootstrap interval ``[low,
    high]`` at ``level``; ``low`` and ``high`` are None when nothing could be resampled."""

    value: float
    low: float | None
    high: float | None
    level: float
    resampled: str  # "seeds and videos", "seeds", "videos" or "nothing"

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2

    @property
    def distinguishable(self) -> bool | None:
        """Whether the interval excludes 0 (for a difference: the rows differ); None without
        an interval."""
        if self.low is None:
            return None
        return self.low > 0 or self.high < 0


def samples_to_narrow(half_width: float, target: float) -> float:
    """How many times its samples (seeds x videos) an interval of ``half_width`` would need to
    narrow to ``|target|``: a bootstrap interval narrows as one over the square root of the
    samples it resamples (infinite for a target of 0)."""
    return (half_width / abs(target)) ** 2 if target else math.inf


def mean_interval(
    scores: np.ndarray,
    level: float = 0.95,
    resamples: int = 2000,
    video_weights: Sequence[float] | np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> Interval:
    """The mean of ``scores[seeds, videos]`` (videos weighted by ``video_weights``, equal by
    default) and its percentile bootstrap interval, resampling seeds and, independently,
    videos (see the module's docstring). ``scores[seeds, 1]`` (run-level scores only)
    resamples seeds only; ``scores[1, videos]`` videos only; ``scores[1, 1]`` has no
    interval."""
    scores = _matrix(scores, "scores")
    weights = _weights(video_weights, scores.shape[1])
    _check_options(level, resamples)
    rng = np.random.default_rng(0) if rng is None else rng
    value = _mean(scores, weights)
    resampled = _resampled(scores.shape[0] > 1, scores.shape[1] > 1)
    if resampled == "nothing":
        return Interval(value, None, None, level, resampled)
    seed_counts = _draw_counts(rng, scores.shape[0], resamples)
    video_counts = _draw_counts(rng, scores.shape[1], resamples)
    means = _resampled_means(scores, seed_counts, video_counts * weights)
    low, high = _percentiles(means, level)
    return Interval(value, low, high, level, resampled)


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    videos_a: Sequence[str] | None = None,
    videos_b: Sequence[str] | None = None,
    names: tuple[str, str] = ("a", "b"),
    level: float = 0.95,
    resamples: int = 2000,
    video_weights: Sequence[float] | np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> Interval:
    """The difference of means ``mean(a) - mean(b)`` of two rows' ``[seeds, videos]`` scores
    and its percentile bootstrap interval, paired by video: each resample draws one set of
    video indices used for both rows (so what a video adds to both cancels), and seed indices
    for each row independently. ``b``'s columns are put in the order of ``videos_a`` when both
    name lists are given (``video_weights`` follow ``videos_a``); the two rows must hold the
    same videos. The interval's ``distinguishable`` is whether it excludes 0.

    With one video column (run-level scores only) both rows need two seeds or more, else there
    is no interval: a single seed would pass for a row without spread. With more videos, a row
    with one seed contributes its videos' spread but no seed-to-seed variation."""
    a = _matrix(a, names[0])
    b = _matrix(b, names[1])
    if (videos_a is None) != (videos_b is None):
        raise ValueError(f"{names[0]} vs {names[1]}: video names for one row only")
    if videos_a is not None:
        b = b[:, _alignment(videos_a, videos_b, a.shape[1], b.shape[1], names)]
    elif a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{names[0]} has {a.shape[1]} video columns, {names[1]} {b.shape[1]}: not paired"
        )
    weights = _weights(video_weights, a.shape[1])
    _check_options(level, resamples)
    rng = np.random.default_rng(0) if rng is None else rng
    value = _mean(a, weights) - _mean(b, weights)
    resampled = _resampled(a.shape[0] > 1 or b.shape[0] > 1, a.shape[1] > 1)
    if a.shape[1] == 1 and min(a.shape[0], b.shape[0]) == 1:
        # run-level scores only: a row with one seed has nothing that shows its spread
        resampled = "nothing"
    if resampled == "nothing":
        return Interval(value, None, None, level, resampled)
    video_counts = _draw_counts(rng, a.shape[1], resamples) * weights
    a_means = _resampled_means(a, _draw_counts(rng, a.shape[0], resamples), video_counts)
    b_means = _resampled_means(b, _draw_counts(rng, b.shape[0], resamples), video_counts)
    low, high = _percentiles(a_means - b_means, level)
    return Interval(value, low, high, level, resampled)


def _matrix(scores: np.ndarray, name: str) -> np.ndarray:
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"{name}: expected a non-empty [seeds, videos] matrix, got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name}: scores must be finite")
    return matrix


def _weights(video_weights, videos: int) -> np.ndarray:
    if video_weights is None:
        return np.ones(videos)
    weights = np.asarray(video_weights, dtype=np.float64)
    if weights.shape != (videos,) or (weights <= 0).any():
        raise ValueError(f"video_weights: expected {videos} positive numbers, got {weights}")
    return weights


def _check_options(level: float, resamples: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")


def _alignment(videos_a, videos_b, columns_a: int, columns_b: int, names) -> np.ndarray:
    """The indices of ``videos_b`` that put ``b``'s columns in the order of ``videos_a``."""
    videos_a, videos_b = list(videos_a), list(videos_b)
    for videos, columns, name in ((videos_a, columns_a, names[0]), (videos_b, columns_b, names[1])):
        if len(videos) != columns or len(set(videos)) != len(videos):
            raise ValueError(f"{name}: {columns} score columns need as many distinct video names")
    if set(videos_a) != set(videos_b):
        only_a = sorted(set(videos_a) - set(videos_b))
        only_b = sorted(set(videos_b) - set(videos_a))
        raise ValueError(
            f"{names[0]} and {names[1]} were scored on different videos (only in {names[0]}: "
            f"{', '.join(only_a) or 'none'}; only in {names[1]}: {', '.join(only_b) or 'none'})"
        )
    position = {video: index for index, video in enumerate(videos_b)}
    return np.array([position[video] for video in videos_a])


def _resampled(seeds: bool, videos: bool) -> str:
    return {
        (True, True): "seeds and videos",
        (True, False): "seeds",
        (False, True): "videos",
        (False, False): "nothing",
    }[(seeds, videos)]


def _draw_counts(rng: np.random.Generator, size: int, resamples: int) -> np.ndarray:
    """How often each of ``size`` indices is drawn in each resample of ``size`` draws with
    replacement: ``[resamples, size]``."""
    if size == 1:
        return np.ones((resamples, 1))
    return rng.multinomial(size, np.full(size, 1.0 / size), size=resamples).astype(np.float64)


def _mean(scores: np.ndarray, video_weights: np.ndarray) -> float:
    """The mean over seeds and (weighted) videos, every seed and video counted once."""
    return float((scores.mean(axis=0) * video_weights).sum() / video_weights.sum())


def _resampled_means(
    scores: np.ndarray, seed_counts: np.ndarray, weighted_video_counts: np.ndarray
) -> np.ndarray:
    """The mean of each resample's sub-matrix: rows drawn ``seed_counts[r]`` times, columns
    ``weighted_video_counts[r]`` times (times their weight)."""
    seed_means = seed_counts @ scores / scores.shape[0]  # [resamples, videos]
    return (seed_means * weighted_video_counts).sum(axis=1) / weighted_video_counts.sum(axis=1)


def _percentiles(means: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
