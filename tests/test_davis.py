"""DavisSource on tiny DAVIS layouts written in tmp_path: reading, late objects, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vos.data.palette import DAVIS_PALETTE, ImageReadError, write_frame, write_mask
from vos.data.source import DatasetError
from vos.data.sources.davis import DavisLayout, DavisSource, write_prediction

HEIGHT, WIDTH = 12, 16


def labels_video(frames: int = 3) -> np.ndarray:
    """Two objects in every frame, one void patch."""
    labels = np.zeros((frames, HEIGHT, WIDTH), dtype=np.uint8)
    labels[:, 2:6, 2:6] = 1
    labels[:, 7:10, 9:14] = 2
    labels[:, 0, 0] = 255
    return labels


def write_video(
    root: Path, video: str, labels: np.ndarray, annotated: list[int] | None = None
) -> None:
    layout = DavisLayout(root)
    rng = np.random.default_rng(0)
    for index, mask in enumerate(labels):
        name = f"{index:05d}"
        frame = rng.integers(0, 256, size=(*mask.shape, 3), dtype=np.uint8)
        write_frame(layout.frame_path(video, name), frame)
        if annotated is None or index in annotated:
            write_mask(layout.mask_path(video, name), mask)


def make_layout(root: Path, videos: dict[str, np.ndarray], split: str = "val") -> Path:
    for video, labels in videos.items():
        write_video(root, video, labels)
    image_set = DavisLayout(root).image_set(split)
    image_set.parent.mkdir(parents=True, exist_ok=True)
    image_set.write_text("".join(f"{video}\n" for video in videos))
    return root


@pytest.fixture
def davis_root(tmp_path: Path) -> Path:
    return make_layout(tmp_path / "davis", {"bear": labels_video(3), "cat": labels_video(2)})


def test_reads_a_tiny_layout(davis_root):
    source = DavisSource(davis_root)
    assert source.videos() == ["bear", "cat"]
    assert len(source) == 2
    info = source.info("bear")
    assert info.frame_names == ["00000", "00001", "00002"]
    assert (info.height, info.width) == (HEIGHT, WIDTH)
    assert info.first_frames == {1: 0, 2: 0}  # void (255) is not an object
    assert info.annotated == [0, 1, 2]
    assert info.factors == {}
    assert source.info("bear") is info  # cached
    frame = source.read_frame("bear", 1)
    assert frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(source.read_mask("bear", 2), labels_video(3)[2])


def test_late_objects_and_sparse_annotations(tmp_path):
    labels = labels_video(4)
    labels[:2][labels[:2] == 2] = 0  # object 2 appears in frame 2
    labels[:, 10:12, 0:2] = 0
    labels[3, 10:12, 0:2] = 3  # object 3 appears in frame 3
    root = tmp_path / "davis"
    write_video(root, "dog", labels, annotated=[0, 2, 3])
    image_set = DavisLayout(root).image_set("test-dev")
    image_set.parent.mkdir(parents=True)
    image_set.write_text("dog\n")

    source = DavisSource(root, split="test-dev", require_all_masks=False)
    info = source.info("dog")
    assert info.first_frames == {1: 0, 2: 2, 3: 3}
    assert info.annotated == [0, 2, 3]
    assert info.object_ids == [1, 2, 3]
    with pytest.raises(DatasetError, match=re.escape(str(root / "Annotations/480p/dog/00001.png"))):
        source.read_mask("dog", 1)
    # ground-truth mode needs every mask
    with pytest.raises(DatasetError, match=re.escape("00001.png")):
        DavisSource(root, split="test-dev", require_all_masks=True).info("dog")


def test_factors_file(davis_root):
    (davis_root / "factors.json").write_text(json.dumps({"bear": {"occlusion": True}}))
    source = DavisSource(davis_root)
    assert source.info("bear").factors == {"occlusion": True}
    assert source.info("cat").factors == {}


def test_bad_factors_file(davis_root):
    (davis_root / "factors.json").write_text('{"bear": {"occlusion": "yes"}}')
    with pytest.raises(DatasetError, match="factors.json"):
        DavisSource(davis_root)


def test_write_prediction_round_trip(tmp_path):
    labels = np.zeros((5, 7), dtype=np.uint8)
    labels[1, 1], labels[2, 2], labels[3, 3] = 1, 2, 255
    path = write_prediction(tmp_path / "preds", "bear", "00003", labels)
    assert path == tmp_path / "preds" / "bear" / "00003.png"
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.getpalette() == DAVIS_PALETTE
        np.testing.assert_array_equal(np.asarray(image), labels)


# ---------------------------------------------------------------------------- bad input


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "nowhere"))):
        DavisSource(tmp_path / "nowhere")


@pytest.mark.parametrize("folder", ["JPEGImages", "Annotations"])
def test_missing_images_or_annotations_folder(davis_root, folder):
    (davis_root / folder / "480p").rename(davis_root / folder / "1080p")
    with pytest.raises(DatasetError, match=re.escape(str(davis_root / folder / "480p"))):
        DavisSource(davis_root)


def test_missing_image_set(davis_root):
    with pytest.raises(DatasetError, match=re.escape(str(davis_root / "ImageSets/2017/train.txt"))):
        DavisSource(davis_root, split="train")


def test_listed_videos_missing_on_disk_are_all_named(davis_root):
    DavisLayout(davis_root).image_set("val").write_text("bear\nghost\ncat\nphantom\n")
    with pytest.raises(DatasetError, match="ghost, phantom"):
        DavisSource(davis_root)


def test_video_without_frames(davis_root):
    for path in (davis_root / "JPEGImages/480p/cat").iterdir():
        path.unlink()
    source = DavisSource(davis_root)
    with pytest.raises(DatasetError, match=re.escape(str(davis_root / "JPEGImages/480p/cat"))):
        source.info("cat")


def test_frame_without_its_mask(davis_root):
    missing = davis_root / "Annotations/480p/bear/00001.png"
    missing.unlink()
    with pytest.raises(DatasetError, match=re.escape(str(missing))):
        DavisSource(davis_root).info("bear")
    # only the first mask is needed when not all are required
    assert DavisSource(davis_root, require_all_masks=False).info("bear").annotated == [0, 2]


def test_first_mask_missing(davis_root):
    missing = davis_root / "Annotations/480p/bear/00000.png"
    missing.unlink()
    with pytest.raises(DatasetError, match=re.escape(str(missing))):
        DavisSource(davis_root, require_all_masks=False).info("bear")


def test_mask_size_differs_from_frame(davis_root):
    wrong = davis_root / "Annotations/480p/bear/00002.png"
    write_mask(wrong, np.ones((HEIGHT - 2, WIDTH), dtype=np.uint8))
    pattern = rf"{re.escape(str(wrong))} is 16x10 \(WxH\) but its frame is 16x12"
    with pytest.raises(DatasetError, match=pattern):
        DavisSource(davis_root).info("bear")


def test_rgb_mask_is_refused(davis_root):
    rgb = davis_root / "Annotations/480p/cat/00000.png"
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8), mode="RGB").save(rgb)
    with pytest.raises(ImageReadError, match=re.escape(str(rgb))):
        DavisSource(davis_root).info("cat")


def test_empty_first_mask(davis_root):
    first = davis_root / "Annotations/480p/cat/00000.png"
    only_void = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    only_void[0, :] = 255
    write_mask(first, only_void)
    with pytest.raises(DatasetError, match=re.escape(str(first)) + ".*no object"):
        DavisSource(davis_root).info("cat")


def test_corrupt_frame_is_named_when_read(davis_root):
    corrupt = davis_root / "JPEGImages/480p/bear/00002.jpg"
    corrupt.write_bytes(b"not a jpeg")
    source = DavisSource(davis_root)
    source.info("bear")  # listings and the first frame are fine
    with pytest.raises(ImageReadError, match=re.escape(str(corrupt))):
        source.read_frame("bear", 2)


def test_corrupt_mask_is_named(davis_root):
    corrupt = davis_root / "Annotations/480p/bear/00001.png"
    corrupt.write_bytes(b"\x89PNG broken")
    with pytest.raises(ImageReadError, match=re.escape(str(corrupt))):
        DavisSource(davis_root).info("bear")


def test_unknown_video(davis_root):
    with pytest.raises(DatasetError, match="'wolf'"):
        DavisSource(davis_root).info("wolf")
