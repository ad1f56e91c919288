"""`dataset=davis2016` and `dataset=davis2017` on small layouts written in tmp_path: DAVIS 2016 from
its own download and from a DAVIS 2017 root, DAVIS 2017 test-dev and Full-Resolution, late
objects in ground truth, and what a wrong root says."""

from __future__ import annotations

import csv
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import compose_config, tiny_checkpoint
from hydra.utils import instantiate
from PIL import Image
from test_davis import labels_video, make_layout, write_video

from vos.data.palette import write_frame, write_mask
from vos.data.source import DatasetError
from vos.data.sources.davis import DavisLayout, DavisSource
from vos.data.synthetic import SyntheticSource, export_davis


def write_davis2016(
    root: Path, videos: dict[str, np.ndarray], split: str = "val", frames=None, value: int = 255
) -> Path:
    """DAVIS 2016's own layout: binary grayscale masks (0 and ``value``) and
    ``ImageSets/480p/<split>.txt`` listing frames. ``frames``: RGB per video, else random."""
    layout = DavisLayout(root)
    rng = np.random.default_rng(1)
    lines = []
    for video, labels in videos.items():
        for index, mask in enumerate(labels):
            name = f"{index:05d}"
            frame = (
                frames[video][index]
                if frames
                else rng.integers(0, 256, size=(*mask.shape, 3), dtype=np.uint8)
            )
            write_frame(layout.frame_path(video, name), frame)
            binary = np.where((mask > 0) & (mask < 255), value, 0).astype(np.uint8)
            layout.mask_path(video, name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(binary, mode="L").save(layout.mask_path(video, name))
            lines.append(
                f"/JPEGImages/480p/{video}/{name}.jpg /Annotations/480p/{video}/{name}.png"
            )
    image_set = root / "ImageSets" / "480p" / f"{split}.txt"
    image_set.parent.mkdir(parents=True, exist_ok=True)
    image_set.write_text("\n".join(lines) + "\n")
    return root


def write_list(root: Path, folder: str, split: str, videos: list[str]) -> Path:
    path = root / "ImageSets" / folder / f"{split}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{video}\n" for video in videos))
    return path


# ---------------------------------------------------------------------------- DAVIS 2016


def test_davis2016_download_reads_binary_masks_as_one_object(tmp_path):
    labels = labels_video(3)
    root = write_davis2016(tmp_path / "davis16", {"bear": labels, "cat": labels[:2]})
    # a 0/1 mask reads the same as a 0/255 one
    Image.fromarray((labels[1] == 1).astype(np.uint8), mode="L").save(
        DavisLayout(root).mask_path("bear", "00001")
    )
    source = DavisSource(root, "val", year="2016")
    assert source.image_set_path == root / "ImageSets/480p/val.txt"
    assert source.single_object and source.binary_masks
    assert source.videos() == ["bear", "cat"]
    info = source.info("bear")
    assert info.first_frames == {1: 0} and info.annotated == [0, 1, 2]
    expected = ((labels > 0) & (labels < 255)).astype(np.uint8)
    np.testing.assert_array_equal(source.read_mask("bear", 0), expected[0])
    np.testing.assert_array_equal(source.read_mask("bear", 1), labels[1] == 1)


def test_davis2016_from_a_davis2017_root_merges_the_objects(tmp_path):
    root = make_layout(tmp_path / "davis17", {"bear": labels_video(3), "cat": labels_video(2)})
    write_list(root, "2016", "val", ["cat"])
    source = DavisSource(root, "val", year="2016")
    assert source.image_set_path == root / "ImageSets/2016/val.txt"
    assert not source.binary_masks and source.videos() == ["cat"]
    assert source.info("cat").first_frames == {1: 0}
    labels = labels_video(2)[0]
    mask = source.read_mask("cat", 0)
    np.testing.assert_array_equal(mask == 1, (labels == 1) | (labels == 2))
    np.testing.assert_array_equal(mask == 255, labels == 255)  # void stays void
    # the same root read as DAVIS 2017 keeps both objects
    assert DavisSource(root, "val").info("cat").first_frames == {1: 0, 2: 0}


def test_davis2016_lists_of_a_davis2017_root_come_first(tmp_path):
    root = write_davis2016(tmp_path / "davis", {"bear": labels_video(2), "cat": labels_video(2)})
    write_list(root, "2016", "val", ["cat"])
    assert DavisSource(root, "val", year="2016").videos() == ["cat"]


def test_davis2016_list_errors(tmp_path):
    root = write_davis2016(tmp_path / "davis", {"bear": labels_video(2)})
    candidates = re.escape(
        f"{root / 'ImageSets/2016/train.txt'} or {root / 'ImageSets/480p/train.txt'}"
    )
    with pytest.raises(DatasetError, match=candidates + ".*ImageSets holds 480p/"):
        DavisSource(root, "train", year="2016")

    image_set = root / "ImageSets/480p/val.txt"
    good = image_set.read_text()
    image_set.write_text(good + "bear/00002.jpg\n")
    with pytest.raises(DatasetError, match=re.escape(f"{image_set} line 3")):
        DavisSource(root, "val", year="2016")

    image_set.write_text(
        good + "/JPEGImages/480p/bear/00007.jpg /Annotations/480p/bear/00007.png\n"
    )
    missing = DavisLayout(root).frame_path("bear", "00007")
    with pytest.raises(DatasetError, match=re.escape(str(missing))):
        DavisSource(root, "val", year="2016").info("bear")

    image_set.write_text(good + "/JPEGImages/480p/ghost/00000.jpg /Annotations/480p/ghost/0.png\n")
    with pytest.raises(DatasetError, match=re.escape(str(image_set)) + ".*missing.*: ghost"):
        DavisSource(root, "val", year="2016")


def test_davis2016_empty_first_mask(tmp_path):
    labels = labels_video(2)
    labels[0] = 0
    root = write_davis2016(tmp_path / "davis", {"bear": labels})
    with pytest.raises(DatasetError, match=re.escape("bear/00000.png") + ".*no object"):
        DavisSource(root, "val", year="2016").info("bear")


# ---------------------------------------------------------------------------- configs + vos.eval


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("run"))


@pytest.fixture
def run_eval(run_command):
    """``python -m vos.eval ARGS`` (its main() in this process)."""
    return lambda *args: run_command("vos.eval", *args)


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_davis2016_config_segments_and_scores_one_object_per_video(checkpoint, tmp_path, run_eval):
    generated = SyntheticSource("train", 2, 8, seed=5, height=40, width=56, late_object_prob=0.0)
    videos = {
        v: np.stack([generated.read_mask(v, t) for t in range(8)]) for v in generated.videos()
    }
    frames = {v: np.stack([generated.read_frame(v, t) for t in range(8)]) for v in videos}
    root = write_davis2016(tmp_path / "davis16", videos, frames=frames)
    write_davis2016(tmp_path / "davis16", videos, split="train", frames=frames)
    cfg = compose_config("eval", ["dataset=davis2016", f"dataset.root={root}"])
    assert instantiate(cfg.dataset.train).videos() == list(videos)
    assert instantiate(cfg.dataset.eval).single_object

    out = tmp_path / "pred"
    result = run_eval(
        f"ckpt_path={checkpoint}", "dataset=davis2016", f"dataset.root={root}", f"output_dir={out}"
    )
    assert result.returncode == 0, result.stderr
    rows = read_csv(out / "per-sequence_results.csv")
    assert [row["Sequence"] for row in rows] == [f"{video}_1" for video in videos]
    assert 0.0 <= float(read_csv(out / "global_results.csv")[0]["J&F-Mean"]) <= 1.0
    first = np.asarray(Image.open(out / "syn_train_0000/00000.png"))
    np.testing.assert_array_equal(first, videos["syn_train_0000"][0] > 0)  # the given mask


def test_davis2017_test_dev_writes_a_submission_zip(checkpoint, tmp_path, run_eval):
    root = tmp_path / "davis-test-dev"
    labels = labels_video(4)
    for video in ("bike", "dog"):
        write_video(root, video, labels, annotated=[0])  # first-frame masks only
    write_list(root, "2017", "test-dev", ["bike", "dog"])
    cfg = compose_config(
        "eval", ["dataset=davis2017", f"dataset.root={root}", "dataset.split=test-dev"]
    )
    source = instantiate(cfg.dataset.eval)
    info = source.info("dog")
    assert info.annotated == [0] and info.first_frames == {1: 0, 2: 0}
    assert source.submission_folder == ""

    out = tmp_path / "pred"
    result = run_eval(
        f"ckpt_path={checkpoint}",
        "dataset=davis2017",
        f"dataset.root={root}",
        "dataset.split=test-dev",
        f"output_dir={out}",
    )
    assert result.returncode == 0, result.stderr
    required = {f"{video}/{t:05d}.png" for video in ("bike", "dog") for t in range(4)}
    written = {str(p.relative_to(out)) for p in out.rglob("*.png")}
    assert written == required
    assert {p.name for p in out.iterdir()} == {"bike", "dog", "submission.zip"}  # not scored
    with zipfile.ZipFile(out / "submission.zip") as archive:
        assert set(archive.namelist()) == required


def test_davis2017_full_resolution(tmp_path):
    root = tmp_path / "davis"
    layout = DavisLayout(root, resolution="Full-Resolution")
    for index, mask in enumerate(labels_video(2)):
        write_frame(layout.frame_path("bear", f"{index:05d}"), np.zeros((12, 16, 3), np.uint8))
        write_mask(layout.mask_path("bear", f"{index:05d}"), mask)
    write_list(root, "2017", "train", ["bear"])
    write_list(root, "2017", "val", ["bear"])
    cfg = compose_config(
        "eval", ["dataset=davis2017", f"dataset.root={root}", "dataset.resolution=Full-Resolution"]
    )
    for key in ("train", "eval"):
        assert instantiate(cfg.dataset[key]).info("bear").first_frames == {1: 0, 2: 0}
    cfg = compose_config("eval", ["dataset=davis2017", f"dataset.root={root}"])
    with pytest.raises(Exception, match=r"(?s)480p.*found: .*JPEGImages holds Full-Resolution/"):
        instantiate(cfg.dataset.eval)


# ---------------------------------------------------------------------------- late objects


def late_labels() -> np.ndarray:
    labels = labels_video(4)
    labels[:2][labels[:2] == 2] = 0  # object 2 first appears in frame 2
    return labels


def test_late_object_in_davis_ground_truth(tmp_path):
    root = make_layout(tmp_path / "davis", {"bear": labels_video(3), "dog": late_labels()})
    expected = re.escape(str(root / "Annotations/480p/dog/00002.png"))
    with pytest.raises(DatasetError, match=r"'dog': object 2 first appears in " + expected):
        DavisSource(root, late_objects=False).info("dog")
    # allowed by default (any data in the layout) and when the dataset declares it
    assert DavisSource(root).info("dog").first_frames == {1: 0, 2: 2}
    (root / "factors.json").write_text(json.dumps({"dog": {"late_objects": True}}))
    assert DavisSource(root, late_objects=False).info("dog").first_frames == {1: 0, 2: 2}


def test_late_object_with_sparse_masks_is_not_ground_truth(tmp_path):
    root = tmp_path / "davis"
    write_video(root, "dog", late_labels(), annotated=[0, 2])
    write_list(root, "2017", "test-dev", ["dog"])
    source = DavisSource(root, "test-dev", require_all_masks=False, late_objects=False)
    assert source.info("dog").first_frames == {1: 0, 2: 2}


def test_davis2017_config_refuses_late_objects_unless_told(tmp_path):
    root = make_layout(tmp_path / "davis", {"dog": late_labels()})
    overrides = ["dataset=davis2017", f"dataset.root={root}"]
    with pytest.raises(DatasetError, match="dataset.late_objects=true"):
        instantiate(compose_config("eval", overrides).dataset.eval).info("dog")
    allowed = compose_config("eval", [*overrides, "dataset.late_objects=true"])
    assert instantiate(allowed.dataset.eval).info("dog").first_frames == {1: 0, 2: 2}


def test_generated_export_declares_its_late_objects(tmp_path):
    export_davis(tmp_path, videos_per_split=3, num_frames=30, seed=3, height=40, width=56)
    cfg = compose_config("eval", ["dataset=davis2017", f"dataset.root={tmp_path}"])
    source = instantiate(cfg.dataset.eval)
    late = [v for v in source.videos() if max(source.info(v).first_frames.values()) > 0]
    assert late  # read without error: factors.json marks them


def test_davis_ids_may_skip_numbers(tmp_path):
    labels = labels_video(2)
    labels[labels == 2] = 3
    root = make_layout(tmp_path / "davis", {"bear": labels})
    assert DavisSource(root).info("bear").first_frames == {1: 0, 3: 0}


# ---------------------------------------------------------------------------- wrong roots


def test_root_one_level_too_high_is_pointed_out(tmp_path):
    make_layout(tmp_path / "DAVIS", {"bear": labels_video(2)})
    with pytest.raises(DatasetError, match=re.escape(f"did you mean {tmp_path / 'DAVIS'}?")):
        DavisSource(tmp_path)


def test_youtube_root_is_named_as_such(tmp_path):
    (tmp_path / "valid/JPEGImages").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"expected a DAVIS layout.*YouTube-VOS layout"):
        DavisSource(tmp_path, year="2016")


def test_mixed_frame_sizes_within_a_video(tmp_path):
    root = make_layout(tmp_path / "davis", {"bear": labels_video(3)})
    odd = DavisLayout(root).frame_path("bear", "00002")
    write_frame(odd, np.zeros((20, 16, 3), dtype=np.uint8))
    source = DavisSource(root)
    with pytest.raises(DatasetError, match=re.escape(str(odd)) + r" is 16x20 \(WxH\)"):
        source.read_frame("bear", 2)
