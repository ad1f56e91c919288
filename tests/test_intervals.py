"""vos.results.intervals: bootstrap intervals over seeds and videos, paired differences."""

import numpy as np
import pytest

from vos.results.intervals import mean_interval, paired_difference

# a wide spread across videos, the same for every test that needs one
SPREAD = np.linspace(0.3, 0.9, 20)


def _width(interval):
    return interval.high - interval.low


def test_constant_scores_give_a_zero_width_interval_at_their_value():
    interval = mean_interval(np.full((3, 10), 0.7))
    assert interval.value == pytest.approx(0.7)
    assert interval.low == pytest.approx(0.7, abs=1e-12)
    assert interval.high == pytest.approx(0.7, abs=1e-12)
    assert interval.resampled == "seeds and videos"


def test_width_shrinks_as_one_over_the_square_root_of_the_videos():
    few = mean_interval(SPREAD[None, :])  # one seed: videos only
    many = mean_interval(np.tile(SPREAD, 4)[None, :])  # same spread, four times the videos
    assert few.resampled == many.resampled == "videos"
    assert few.value == pytest.approx(many.value)
    assert _width(few) / _width(many) == pytest.approx(2.0, rel=0.15)


def test_seeds_are_resampled_as_well_as_videos():
    # every video scores the same within a seed: only the seeds spread
    by_seed = np.array([0.6, 0.7, 0.8])[:, None] * np.ones((1, 10))
    interval = mean_interval(by_seed)
    assert interval.value == pytest.approx(0.7)
    assert _width(interval) > 0.05
    # the seeds' spread adds to the videos'
    crossed = mean_interval(by_seed + (SPREAD[:10] - SPREAD[:10].mean()))
    assert _width(crossed) > _width(mean_interval((SPREAD[:10] - SPREAD[:10].mean())[None] + 0.7))


def test_run_level_scores_resample_seeds_and_one_run_has_no_interval():
    seeds_only = mean_interval(np.array([[0.6], [0.7], [0.8]]))
    assert seeds_only.resampled == "seeds" and seeds_only.low < 0.7 < seeds_only.high
    single = mean_interval(np.array([[0.7]]))
    assert single.value == 0.7 and single.low is None and single.high is None
    assert single.half_width is None and single.distinguishable is None


def test_videos_are_weighted_by_their_objects():
    scores = np.array([[0.2, 0.8]])
    interval = mean_interval(scores, video_weights=[1, 3])
    assert interval.value == pytest.approx((0.2 * 1 + 0.8 * 3) / 4)


def test_intervals_are_deterministic_and_follow_the_level():
    scores = np.vstack([SPREAD, SPREAD + 0.02])
    assert mean_interval(scores) == mean_interval(scores)
    assert _width(mean_interval(scores, level=0.5)) < _width(mean_interval(scores, level=0.95))


def _unpaired_difference(a, b, resamples=2000, level=0.95):
    """a - b with the videos of each row drawn on their own (what pairing avoids)."""
    rng = np.random.default_rng(0)
    differences = []
    for _ in range(resamples):
        rows_a = a[np.ix_(rng.integers(0, len(a), len(a)), rng.integers(0, a.shape[1], a.shape[1]))]
        rows_b = b[np.ix_(rng.integers(0, len(b), len(b)), rng.integers(0, b.shape[1], b.shape[1]))]
        differences.append(rows_a.mean() - rows_b.mean())
    return np.quantile(differences, [(1 - level) / 2, (1 + level) / 2])


def test_paired_difference_is_narrow_where_rows_differ_by_the_same_on_every_video():
    seed_noise = np.array([-0.002, 0.0, 0.002])[:, None]
    b = SPREAD[None, :] + seed_noise
    a = b + 0.01
    difference = paired_difference(a, b, names=("better", "base"))
    assert difference.value == pytest.approx(0.01)
    assert 0 < difference.low < 0.01 < difference.high < 0.02
    assert difference.distinguishable
    unpaired_low, unpaired_high = _unpaired_difference(a, b)
    assert unpaired_low < 0 < unpaired_high  # unpaired, the videos' spread hides the gain
    assert _width(difference) < (unpaired_high - unpaired_low) / 5


def test_paired_difference_aligns_the_videos_by_name():
    names = [f"video{i:02d}" for i in range(len(SPREAD))]
    a = np.vstack([SPREAD + 0.01, SPREAD + 0.012])
    b = SPREAD[None, :]
    order = np.random.default_rng(3).permutation(len(names))
    shuffled = paired_difference(a, b[:, order], names, [names[i] for i in order])
    assert shuffled == paired_difference(a, b, names, names)
    assert shuffled.distinguishable


def test_a_difference_whose_interval_holds_zero_is_not_distinguishable():
    rng = np.random.default_rng(1)
    b = SPREAD[None, :] + rng.normal(0, 0.05, (2, len(SPREAD)))
    a = SPREAD[None, :] + rng.normal(0, 0.05, (2, len(SPREAD)))
    difference = paired_difference(a, b)
    assert difference.low < 0 < difference.high and difference.distinguishable is False


def test_different_video_sets_are_an_error_naming_both_rows():
    scores = np.ones((1, 3))
    with pytest.raises(ValueError, match="model=stm.*model=hmmn.*bike.*dogs"):
        paired_difference(
            scores,
            scores,
            ["bear", "bike", "car"],
            ["bear", "car", "dogs"],
            names=("model=stm", "model=hmmn"),
        )


def test_run_level_difference_needs_two_seeds_on_each_side():
    three = np.array([[0.6], [0.7], [0.8]])
    assert paired_difference(three, three - 0.1).resampled == "seeds"
    single = paired_difference(three, np.array([[0.5]]))
    assert single.value == pytest.approx(0.2) and single.low is None
    assert single.distinguishable is None
