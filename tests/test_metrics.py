"""J&F against hand-computed values (DAVIS definitions), and the JAndF metric's bookkeeping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vos.metrics import (
    GLOBAL_COLUMNS,
    JAndF,
    boundary_tolerance,
    db_eval_iou,
    db_statistics,
    disk,
    evaluate_video,
    f_measure,
    format_results,
    seg2bmap,
    video_key,
    write_results,
)


def square(height: int, width: int, top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


# ---------------------------------------------------------------------------- J


def test_iou_both_empty_is_one():
    empty = np.zeros((5, 7), dtype=bool)
    assert db_eval_iou(empty, empty) == 1.0


def test_iou_one_pixel_objects():
    gt = np.zeros((5, 5), dtype=bool)
    gt[2, 2] = True
    same = gt.copy()
    moved = np.zeros_like(gt)
    moved[2, 3] = True
    assert db_eval_iou(gt, same) == 1.0
    assert db_eval_iou(gt, moved) == 0.0
    assert db_eval_iou(gt, np.zeros_like(gt)) == 0.0


def test_iou_partial_overlap_exact_fraction():
    gt = square(8, 8, 0, 0, 4)  # 16 px
    pred = square(8, 8, 0, 2, 4)  # 16 px, 8 shared
    assert db_eval_iou(gt, pred) == pytest.approx(8 / 24)


def test_iou_of_a_stack_is_per_frame():
    gt = np.stack([square(8, 8, 0, 0, 4), np.zeros((8, 8), bool)])
    pred = np.stack([square(8, 8, 0, 2, 4), np.zeros((8, 8), bool)])
    np.testing.assert_allclose(db_eval_iou(gt, pred), [1 / 3, 1.0])


def test_void_excluded_when_given_but_background_in_semi_supervised_protocol():
    gt = np.zeros((1, 6, 6), dtype=np.uint8)
    gt[0, 0:2, 0:2] = 1  # 4 object pixels
    gt[0, 0:2, 2:4] = 255  # 4 void pixels
    pred = np.zeros_like(gt)
    pred[0, 0:2, 0:4] = 1  # the object and the void region
    # DAVIS's db_eval_iou with a void mask ignores the void pixels ...
    assert db_eval_iou(gt[0] == 1, pred[0] == 1, void=gt[0] == 255) == 1.0
    # ... but the semi-supervised evaluation passes none: void counts as background
    frames = np.concatenate([np.zeros_like(gt), gt, np.zeros_like(gt)])
    preds = np.concatenate([np.zeros_like(pred), pred, np.zeros_like(pred)])
    j_values, _ = evaluate_video(frames, preds, {1: 0})[1]
    np.testing.assert_allclose(j_values, [4 / 8])


# ---------------------------------------------------------------------------- boundaries


def test_seg2bmap_hand_drawn_interior_square():
    seg = np.array(
        [
            [0, 0, 0, 0],
            [0, 1, 1, 0],
            [0, 1, 1, 0],
            [0, 0, 0, 0],
        ]
    )
    expected = np.array(
        [
            [1, 1, 1, 0],
            [1, 0, 1, 0],
            [1, 1, 1, 0],
            [0, 0, 0, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(seg2bmap(seg), expected)


def test_seg2bmap_last_row_and_column_rules():
    # the object touches the last row and column: there only E (last row) / S (last column)
    # are compared, and the corner is never a boundary
    seg = np.array(
        [
            [0, 0, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 1, 1],
            [0, 0, 1, 1],
        ]
    )
    expected = np.array(
        [
            [0, 0, 0, 0],
            [0, 1, 1, 1],
            [0, 1, 0, 0],
            [0, 1, 0, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(seg2bmap(seg), expected)


def test_disk_matches_skimage_definition():
    np.testing.assert_array_equal(disk(1), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    np.testing.assert_array_equal(
        disk(2),
        [
            [0, 0, 1, 0, 0],
            [0, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
            [0, 1, 1, 1, 0],
            [0, 0, 1, 0, 0],
        ],
    )
    assert disk(8).shape == (17, 17)
    assert disk(0).tolist() == [[1]]


def test_boundary_tolerance():
    assert boundary_tolerance(480, 854) == 8  # DAVIS 480p: ceil(7.84)
    assert boundary_tolerance(1080, 1920) == 18
    assert boundary_tolerance(200, 300) == 3  # ceil(0.008 * 360.6) = ceil(2.88)
    assert boundary_tolerance(200, 300, bound_th=5) == 5  # >= 1: a pixel count


@pytest.mark.parametrize("shift", [0, 1, 3])
def test_f_square_shifted_within_tolerance_is_perfect(shift):
    gt = square(200, 300, 50, 50, 50)
    pred = square(200, 300, 50, 50 + shift, 50)
    assert f_measure(pred, gt) == 1.0


def test_f_square_shifted_beyond_tolerance():
    # bound_pix = 3 at 200x300. Each boundary has 200 px (seg2bmap of a 50x50 square). Shifted
    # by 4 columns, matched predicted pixels: 8 of the left edge (near the horizontal
    # edges), 49 of 50 on top, 0 on the right, 49 of 49 at the bottom = 106; the recall
    # count is the same by symmetry: P = R = F = 106/200.
    gt = square(200, 300, 50, 50, 50)
    pred = square(200, 300, 50, 54, 50)
    assert seg2bmap(gt).sum() == 200
    assert f_measure(pred, gt) == pytest.approx(106 / 200)
    # a larger tolerance makes the same shift perfect again
    assert f_measure(pred, gt, bound_th=4) == 1.0


def test_f_empty_cases():
    empty = np.zeros((20, 20), dtype=bool)
    obj = square(20, 20, 5, 5, 6)
    assert f_measure(empty, empty) == 1.0  # P = R = 1
    assert f_measure(empty, obj) == 0.0  # nothing predicted: P = 1, R = 0
    assert f_measure(obj, empty) == 0.0  # nothing to find: P = 0, R = 1


def test_f_one_pixel_objects():
    gt = np.zeros((200, 300), dtype=bool)
    gt[100, 100] = True
    near = np.zeros_like(gt)
    near[100, 102] = True  # boundaries 2 px apart, tolerance 3
    far = np.zeros_like(gt)
    far[100, 110] = True
    assert seg2bmap(gt).sum() == 4  # the pixel and its left, upper, upper-left neighbours
    assert f_measure(gt, gt) == 1.0
    assert f_measure(near, gt) == 1.0
    assert f_measure(far, gt) == 0.0


# ---------------------------------------------------------------------------- statistics


def test_recall_is_strictly_above_half():
    mean, recall, _ = db_statistics(np.array([0.5, 0.5, 0.6, 0.4]))
    assert recall == 0.25
    assert mean == pytest.approx(0.5)


def test_decay_short_sequence():
    # n = 5: ids = [0, 1, 2, 3, 4], bins v[0:2] and v[3:5]
    _, _, decay = db_statistics(np.array([1.0, 0.8, 0.6, 0.4, 0.2]))
    assert decay == pytest.approx(0.9 - 0.3)


def test_decay_long_sequence_has_no_uint8_wrap():
    # v_i = 1 - i/1000 over 300 frames. ids = round(linspace(1, 300, 5)) - 1
    # = [0, 75, 150, 224, 299]; first bin v[0:76] has mean index 37.5, last bin v[224:300]
    # mean index 261.5, so decay = (261.5 - 37.5) / 1000 = 0.224. (In uint8, 299 wraps to 43
    # and the last bin is empty.)
    values = 1 - np.arange(300) / 1000
    mean, recall, decay = db_statistics(values)
    assert decay == pytest.approx(0.224)
    assert mean == pytest.approx(1 - 149.5 / 1000)
    assert recall == 1.0


def test_statistics_of_nothing_are_nan():
    assert all(math.isnan(value) for value in db_statistics(np.zeros(0)))


# ---------------------------------------------------------------------------- videos


def test_late_object_scored_only_after_its_first_frame():
    frames, height, width = 6, 10, 10
    gt = np.zeros((frames, height, width), dtype=np.uint8)
    gt[:, 1:4, 1:4] = 1
    gt[3:, 6:9, 6:9] = 2  # object 2 is given in frame 3
    pred = gt.copy()
    pred[1:3, 6:9, 6:9] = 2  # wrong before its first frame: must not count
    scores = evaluate_video(gt, pred, {1: 0, 2: 3})
    j_1, f_1 = scores[1]
    j_2, f_2 = scores[2]
    assert len(j_1) == 4  # frames 1..4 ([1:-1])
    assert j_2.tolist() == [1.0] and f_2.tolist() == [1.0]  # frame 4 only
    assert j_1.tolist() == [1.0] * 4


def test_unknown_predicted_label_is_an_error():
    gt = np.zeros((3, 4, 4), dtype=np.uint8)
    gt[:, 0, 0] = 1
    pred = gt.copy()
    pred[1, 2, 2] = 7
    with pytest.raises(ValueError, match=r"\[7\]"):
        evaluate_video(gt, pred, {1: 0})


def _video(num_objects: int, frames: int = 4, perfect: bool = True):
    gt = np.zeros((frames, 12, 12), dtype=np.uint8)
    for obj in range(1, num_objects + 1):
        gt[:, obj * 3 : obj * 3 + 2, 2:8] = obj
    pred = gt.copy() if perfect else np.zeros_like(gt)
    if not perfect:
        pred[0] = gt[0]
    return gt, pred, {obj: 0 for obj in range(1, num_objects + 1)}


def test_jandf_weights_objects_and_deduplicates():
    metric = JAndF()
    metric.update("alpha", *_video(2, perfect=True), factors={"occlusion": True})
    metric.update("beta", *_video(1, perfect=False), factors={"occlusion": False})
    once = metric.compute()
    # a padded distributed sampler repeats a video: the result must not move
    metric.update("beta", *_video(1, perfect=False), factors={"occlusion": False})
    twice = metric.compute()
    assert once == twice
    # 3 objects: two perfect (J = F = 1), one missed (J = 0; F = 0 since P = 1, R = 0)
    assert twice["J-Mean"] == pytest.approx(2 / 3)
    assert twice["F-Mean"] == pytest.approx(2 / 3)
    assert twice["J&F-Mean"] == pytest.approx(2 / 3)
    assert twice["J-Recall"] == pytest.approx(2 / 3)
    assert twice["J-Decay"] == 0.0
    names = [row["Sequence"] for row in metric.per_sequence()]
    assert names == ["alpha_1", "alpha_2", "beta_1"]


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric JAndF was called before")
def test_jandf_deduplicates_gathered_rows():
    # what `dist_reduce_fx="cat"` leaves after a sync: one tensor with both ranks' rows
    rank0, rank1 = JAndF(), JAndF()
    rank0.update("alpha", *_video(2))
    rank1.update("alpha", *_video(2))
    rank1.update("beta", *_video(1, perfect=False))
    merged = JAndF()
    merged.rows = torch.cat([*rank0.rows, *rank1.rows])
    assert merged.compute()["J-Mean"] == pytest.approx(2 / 3)
    # names stay on the rank that saw the video; elsewhere the key stands in
    assert [row["Sequence"] for row in merged.per_sequence()] == [
        f"video_{video_key('alpha')}_1",
        f"video_{video_key('alpha')}_2",
        f"video_{video_key('beta')}_1",
    ]


def test_jandf_per_video_means_objects_and_factors():
    metric = JAndF(factors=("occlusion", "distractors", "late_objects"))
    beta_gt, beta_pred, beta_first = _video(2, perfect=True)
    beta_pred[1:, 6:8, 2:8] = 0  # object 2 missed after its given frame
    metric.update("beta", beta_gt, beta_pred, beta_first, factors={"occlusion": True})
    metric.update("alpha", *_video(1, perfect=False), factors={"occlusion": False})
    metric.update("alpha", *_video(1, perfect=False), factors={"occlusion": False})  # a repeat
    rows = metric.per_video()
    assert [row["video"] for row in rows] == ["alpha", "beta"]  # sorted, deduplicated
    alpha, beta = rows
    assert (alpha["objects"], beta["objects"]) == (1, 2)
    assert alpha["J&F-Mean"] == alpha["J-Mean"] == alpha["F-Mean"] == 0.0
    assert beta["J-Mean"] == pytest.approx(0.5) and beta["F-Mean"] == pytest.approx(0.5)
    assert beta["J&F-Mean"] == pytest.approx(0.5)
    assert (alpha["occlusion"], beta["occlusion"]) == (False, True)
    assert alpha["distractors"] is None  # unknown
    assert alpha["late_objects"] is False  # derived from first_frames
    # the object-weighted mean of the videos is the global score
    weighted = sum(row["J&F-Mean"] * row["objects"] for row in rows) / 3
    assert weighted == pytest.approx(metric.compute()["J&F-Mean"])


def test_jandf_factor_breakdown():
    metric = JAndF(factors=("occlusion", "distractors", "late_objects"))
    metric.update("alpha", *_video(2, perfect=True), factors={"occlusion": True})
    metric.update("beta", *_video(1, perfect=False), factors={"occlusion": False})
    gamma_gt, gamma_pred, _ = _video(1, frames=5, perfect=True)
    metric.update("gamma", gamma_gt, gamma_pred, {1: 1})  # factors unknown
    results = metric.compute()
    assert results["J&F-Mean/occlusion"] == 1.0
    assert results["J&F-Mean/no_occlusion"] == 0.0
    assert "J&F-Mean/distractors" not in results  # no video has it
    # late_objects is derived from first_frames when the factors do not say
    assert results["J&F-Mean/late_objects"] == 1.0
    assert results["J&F-Mean/no_late_objects"] == pytest.approx(2 / 3)


def test_jandf_empty_is_a_clear_error():
    metric = JAndF()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no scored objects"):
        metric.compute()


def test_write_and_format_results(tmp_path):
    metric = JAndF()
    metric.update("alpha", *_video(2))
    metric.update("beta", *_video(1, perfect=False))
    global_path, sequence_path = write_results(tmp_path / "out", metric)
    global_lines = global_path.read_text().splitlines()
    assert global_lines[0] == "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay"
    values = dict(zip(GLOBAL_COLUMNS, map(float, global_lines[1].split(","))))
    assert values["J&F-Mean"] == pytest.approx(2 / 3, abs=1e-6)
    sequence_lines = sequence_path.read_text().splitlines()
    assert sequence_lines == [
        "Sequence,J-Mean,F-Mean",
        "alpha_1,1.000000,1.000000",
        "alpha_2,1.000000,1.000000",
        "beta_1,0.000000,0.000000",
    ]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "global_results.csv",
        "per-sequence_results.csv",
    ]  # no temporary files left behind
    text = format_results(metric)
    assert "J&F-Mean" in text and "beta_1" in text


def test_write_factors_keeps_each_videos_known_factors(tmp_path):
    """``factors.json`` beside the CSVs: per scored video the factors it was scored with, in
    a DAVIS-layout root's format; a factor nobody stated is left out, not written false."""
    import json

    from vos.metrics import write_factors

    metric = JAndF(factors=("distractors", "occlusion", "late_objects"))
    metric.update("alpha", *_video(2), factors={"distractors": True})
    metric.update(
        "beta", *_video(1, perfect=False), factors={"distractors": False, "occlusion": True}
    )
    path = write_factors(tmp_path, metric)
    assert json.loads(path.read_text()) == {
        "alpha": {"distractors": True, "late_objects": False},
        "beta": {"distractors": False, "occlusion": True, "late_objects": False},
    }
    empty = JAndF(factors=("distractors",))
    empty.update("alpha", *_video(2))
    assert write_factors(tmp_path / "none", empty) is None
    assert not (tmp_path / "none").exists()


def test_objects_with_no_frame_to_score_are_named_not_dropped_silently():
    """A one-frame video (and an object given in one of the last two frames) has nothing DAVIS
    scores; it is left out of the means, and the formatted results say which."""
    from vos.metrics import JAndF, format_results

    metric = JAndF()
    labels = np.zeros((5, 8, 8), dtype=np.uint8)
    labels[:, 2:5, 2:5] = 1
    metric.update("long", labels, labels, {1: 0})
    metric.update("single", labels[:1], labels[:1], {1: 0})
    assert metric.unscored == ["single object 1"]
    assert metric.compute()["J&F-Mean"] == 1.0
    text = format_results(metric)
    assert "Left out of the means" in text and "single object 1" in text
    metric.reset()
    assert metric.unscored == []


def test_cpu_peak_memory_is_the_resident_set_not_its_growth():
    """On the CPU the dashboard's peak is the process's resident set at its largest (a model
    and its inputs are hundreds of MB), not the few KB it grew by during one video."""
    from vos.profiling import PeakMemory, current_rss_mb

    with PeakMemory("cpu") as whole:
        pass
    with PeakMemory("cpu", growth=True) as grown:
        pass
    assert whole.peak_mb >= 0.9 * current_rss_mb() > 10
    assert grown.peak_mb < 10


def test_time_calls_times_without_the_memory_sampler_and_still_reports_the_peak():
    """The timed calls run with no sampler thread beside them (on 2 cores it slowed them);
    the peak comes from one more call that the sampler watches."""
    import threading

    from vos.profiling import time_calls

    threads = []

    def call():
        threads.append(threading.active_count())
        block = torch.ones(96 * 2**20 // 4)  # 96 MiB, touched
        block.add_(1.0).sum()

    ms, peak_mb = time_calls(call, 3, "cpu", warmup=1)
    assert len(threads) == 1 + 3 + 1 and ms > 0
    assert threads[:4] == [threads[0]] * 4  # warm-up and timed calls: no sampler
    assert threads[4] == threads[0] + 1  # the peak's call: the sampler's thread
    assert peak_mb > 48
