"""`python -m vos.evaluate` on a tiny DAVIS layout: perfect scores, exact CSVs, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_writers import write_davis_layout

from vos.data.source import DatasetError
from vos.data.sources.davis import DavisSource, write_prediction
from vos.metrics.scoring import evaluate_folders, score_predictions

HEIGHT, WIDTH = 12, 16


def labels_video(frames: int) -> np.ndarray:
    """Two objects in every frame, one void pixel."""
    labels = np.zeros((frames, HEIGHT, WIDTH), dtype=np.uint8)
    labels[:, 2:6, 2:6] = 1
    labels[:, 7:10, 9:14] = 2
    labels[:, 0, 0] = 255
    return labels


def make_layout(root: Path, videos: dict[str, np.ndarray]) -> Path:
    write_davis_layout(root, videos, {"val": list(videos)})
    return root


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """A ground-truth root with two videos and perfect predictions for them."""
    videos = {"bear": labels_video(4), "cat": labels_video(3)}
    gt_root = make_layout(tmp_path / "davis", videos)
    pred_root = tmp_path / "preds"
    for video, labels in videos.items():
        for index, mask in enumerate(labels):
            # void is never predicted
            write_prediction(pred_root, video, f"{index:05d}", np.where(mask == 255, 0, mask))
    return gt_root, pred_root


@pytest.fixture
def run_evaluate(run_command):
    """``python -m vos.evaluate OVERRIDES`` from ``cwd`` (its main() in this process)."""
    return lambda cwd, *overrides: run_command("vos.evaluate", *overrides, cwd=cwd)


def test_perfect_predictions(folders, tmp_path, run_evaluate):
    gt_root, pred_root = folders
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    result = run_evaluate(workdir, f"gt_root={gt_root}", f"pred_root={pred_root}", "split=val")
    assert result.returncode == 0, result.stderr
    assert "J&F-Mean" in result.stdout and "bear_2" in result.stdout

    global_lines = (pred_root / "global_results.csv").read_text().splitlines()
    assert global_lines[0] == "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay"
    values = [float(value) for value in global_lines[1].split(",")]
    assert values == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    sequence_lines = (pred_root / "per-sequence_results.csv").read_text().splitlines()
    assert sequence_lines[0] == "Sequence,J-Mean,F-Mean"
    assert [line.split(",")[0] for line in sequence_lines[1:]] == [
        "bear_1",
        "bear_2",
        "cat_1",
        "cat_2",
    ]
    assert list(workdir.iterdir()) == []  # Hydra made no output folder and did not chdir


def test_evaluate_folders_scores_errors_and_matches_hand_values(folders, tmp_path):
    gt_root, pred_root = folders
    # drop object 2 from bear's scored frames (1 and 2): bear_2 gets J = F = 0
    for index in (1, 2):
        labels = labels_video(4)[index]
        labels[labels != 1] = 0
        write_prediction(pred_root, "bear", f"{index:05d}", labels)
    results = evaluate_folders(gt_root, pred_root).compute()
    assert results["J-Mean"] == pytest.approx(3 / 4)
    assert results["F-Mean"] == pytest.approx(3 / 4)
    assert results["J-Recall"] == pytest.approx(3 / 4)


def test_score_predictions_on_a_subset(folders):
    gt_root, pred_root = folders
    metric = score_predictions(DavisSource(gt_root), pred_root, videos=["cat"])
    assert [row["Sequence"] for row in metric.per_sequence()] == ["cat_1", "cat_2"]
    assert metric.compute()["J&F-Mean"] == 1.0


def test_unknown_predicted_label_names_video(folders):
    gt_root, pred_root = folders
    labels = labels_video(3)[1]
    labels[labels == 255] = 9
    write_prediction(pred_root, "cat", "00001", labels)
    with pytest.raises(ValueError, match=r"'cat'.*\[9\]"):
        evaluate_folders(gt_root, pred_root)


def test_missing_prediction_folder(folders, tmp_path):
    gt_root, _ = folders
    with pytest.raises(DatasetError, match=str(tmp_path / "nothing")):
        evaluate_folders(gt_root, tmp_path / "nothing")


def test_missing_video_exits_nonzero(folders, tmp_path, run_evaluate):
    gt_root, pred_root = folders
    for path in (pred_root / "cat").iterdir():
        path.unlink()
    (pred_root / "cat").rmdir()
    result = run_evaluate(tmp_path, f"gt_root={gt_root}", f"pred_root={pred_root}")
    assert result.returncode != 0
    assert "cat" in result.stderr and str(pred_root) in result.stderr
    assert not (pred_root / "global_results.csv").exists()


def test_missing_frame_exits_nonzero(folders, tmp_path, run_evaluate):
    gt_root, pred_root = folders
    missing = pred_root / "bear" / "00002.png"
    missing.unlink()
    result = run_evaluate(tmp_path, f"gt_root={gt_root}", f"pred_root={pred_root}")
    assert result.returncode != 0
    assert str(missing) in result.stderr


def test_wrong_size_exits_nonzero(folders, tmp_path, run_evaluate):
    gt_root, pred_root = folders
    wrong = write_prediction(
        pred_root, "cat", "00001", np.zeros((HEIGHT, WIDTH + 4), dtype=np.uint8)
    )
    result = run_evaluate(tmp_path, f"gt_root={gt_root}", f"pred_root={pred_root}")
    assert result.returncode != 0
    assert str(wrong) in result.stderr and "20x12" in result.stderr
