"""dataset.extra_eval: more validation sets beside the eval split, each scored at every
validation by the same engine and J&F, under its own name in the logs and metrics.json."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from data_writers import write_davis_layout
from helpers import TINY, compose_config

from vos.data.source import DatasetError
from vos.lightning.extra_eval import extra_eval_sets
from vos.lightning.training import train

HEIGHT, WIDTH = 48, 64
# a source entry that is the eval split itself
SAME_AS_EVAL = "{name: same, source: ${dataset.eval}}"


def _labels(frames: int, shift: int) -> np.ndarray:
    labels = np.zeros((frames, HEIGHT, WIDTH), dtype=np.uint8)
    for t in range(frames):
        labels[t, 8 + shift : 30 + shift, 4 + t : 28 + t] = 1
    labels[:, 30:44, 40:60] = 2
    return labels


def _folder(root, videos=("clip0", "clip1"), splits=None, frames=30):
    """A DAVIS-layout folder of random frames and moving boxes."""
    clips = {video: _labels(frames, index * 3) for index, video in enumerate(videos)}
    write_davis_layout(root, clips, splits or {})
    return root


def _weighted(rows):
    return sum(row["J&F-Mean"] * row["objects"] for row in rows) / sum(
        row["objects"] for row in rows
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny training without extra sets, and the same training with two: a folder of
    other videos and the eval split itself as a source entry."""
    root = tmp_path_factory.mktemp("extra")
    folder = _folder(root / "other_world")
    plain = train(compose_config("train", TINY), root / "plain")
    extra = [*TINY, "logger=csv", f"dataset.extra_eval=[{folder},{SAME_AS_EVAL}]"]
    train(compose_config("train", extra), root / "extra")
    read = lambda name: json.loads((root / name / "metrics.json").read_text())  # noqa: E731
    return root, plain, read("plain"), read("extra")


def test_extra_sets_are_scored_under_their_own_names(runs):
    root, _, _, written = runs
    other = written["extra_per_video"]["other_world"]
    assert [row["video"] for row in other] == ["clip0", "clip1"]
    assert [row["objects"] for row in other] == [2, 2]
    assert written["extra/other_world/J&F-Mean"] == pytest.approx(_weighted(other), abs=1e-6)
    assert written["extra/other_world/J&F-Mean"] != written["val/J&F-Mean"]
    assert "extra/other_world/ms_per_frame" in written
    # the eval split scored a second time, as an extra set: the same rows and scores
    assert written["extra_per_video"]["same"] == written["per_video"]
    for key in ("J&F-Mean", "J-Mean", "F-Mean", "J&F-Mean/distractors"):
        assert written[f"extra/same/{key}"] == written[f"val/{key}"], key
    # and the logger has them under the same names, without a loader suffix
    with open(root / "extra" / "csv" / "metrics.csv") as file:
        logged = set(next(csv.reader(file)))
    assert {"extra/other_world/J&F-Mean", "extra/same/J&F-Mean", "val/J&F-Mean"} <= logged
    assert not [key for key in logged if "dataloader_idx" in key]


def test_extra_sets_leave_the_eval_split_as_it_was(runs):
    _, plain, plain_written, written = runs
    assert written["per_video"] == plain_written["per_video"]
    scores = {key for key in plain if key.startswith("val/")}
    assert {key for key in written if key.startswith("val/")} == scores
    for key in scores - {"val/ms_per_frame", "val/read_ms_per_frame", "val/fps"}:
        assert written[key] == plain_written[key], key
    assert "extra_per_video" not in plain_written
    assert not [key for key in plain_written if key.startswith("extra/")]


def test_without_an_eval_split_the_extra_sets_are_validated(tmp_path, capfd):
    folder = _folder(tmp_path / "other_world")
    overrides = [
        *TINY,
        "dataset.eval=null",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        f"dataset.extra_eval=[{{name: mine, root: {folder}}}]",
    ]
    metrics = train(compose_config("train", overrides), tmp_path / "run")
    assert "validating on dataset.extra_eval only" in capfd.readouterr().out
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "extra/mine/J&F-Mean" in metrics and "per_video" not in written
    assert [row["video"] for row in written["extra_per_video"]["mine"]] == ["clip0", "clip1"]


def test_a_folder_uses_its_val_list_or_every_video(tmp_path):
    listed = _folder(tmp_path / "listed", ("a", "b", "c"), {"train": ["a"], "val": ["b", "c"]})
    unlisted = _folder(tmp_path / "unlisted", ("a", "b", "c"))
    sets = extra_eval_sets([str(listed), {"name": "all", "root": str(unlisted)}])
    assert [(extra.name, extra.source.videos()) for extra in sets] == [
        ("listed", ["b", "c"]),
        ("all", ["a", "b", "c"]),
    ]
    assert [extra.prefix for extra in sets] == ["extra/listed", "extra/all"]
    (split,) = extra_eval_sets([{"root": str(listed), "split": "train", "name": "t"}])
    assert split.source.videos() == ["a"]
    assert extra_eval_sets([]) == [] and extra_eval_sets(None) == []


def test_bad_entries_name_their_key_and_path(tmp_path):
    good = _folder(tmp_path / "good")
    with pytest.raises(DatasetError, match=r"dataset.extra_eval\[1\]: the folder .*nowhere"):
        extra_eval_sets([str(good), str(tmp_path / "nowhere")])
    no_masks = _folder(tmp_path / "no_masks")
    shutil.rmtree(no_masks / "Annotations")
    with pytest.raises(DatasetError, match=r"extra_eval\[0\] \(no_masks\): Annotations folder"):
        extra_eval_sets([str(no_masks)])
    partly = _folder(tmp_path / "partly")
    (partly / "Annotations" / "480p" / "clip1" / "00007.png").unlink()
    (extra,) = extra_eval_sets([str(partly)])  # every frame is scored: every mask is needed
    with pytest.raises(DatasetError, match="00007.png"):
        extra.source.info("clip1")
    with pytest.raises(ValueError, match=r"extra_eval\[1\]: the name 'good' is also"):
        extra_eval_sets([str(good), {"name": "good", "root": str(partly)}])
    with pytest.raises(ValueError, match=r"extra_eval\[0\]: no name"):
        extra_eval_sets([{"source": {"_target_": "vos.data.synthetic.SyntheticSource"}}])
    with pytest.raises(ValueError, match=r"extra_eval\[0\]: unknown keys \['spilt'\]"):
        extra_eval_sets([{"root": str(good), "spilt": "val"}])
    with pytest.raises(DatasetError, match=r"extra_eval\[0\].source \(syn\): .*num_frames"):
        source = {"_target_": "vos.data.synthetic.SyntheticSource", "split": "val"}
        extra_eval_sets([{"name": "syn", "source": {**source, "num_videos": 1, "num_frames": 3}}])


def test_a_bad_extra_video_stops_training_before_it_starts(tmp_path):
    folder = _folder(tmp_path / "late")
    labels = _labels(30, 0)
    labels[:5][labels[:5] == 2] = 0  # object 2 joins at frame 5: not DAVIS ground truth
    write_davis_layout(folder, {"clip1": labels}, {})
    overrides = [*TINY, f"dataset.extra_eval=[{folder}]"]
    with pytest.raises(DatasetError, match=r"dataset.extra_eval\[0\] \(late\): video 'clip1'"):
        train(compose_config("train", overrides), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
