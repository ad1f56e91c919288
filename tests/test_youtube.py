"""YouTubeVOSSource on small YouTube-VOS layouts written in tmp_path (frames and masks from the
generated dataset): reading, late objects in inference, clip sampling among annotated frames,
the submission written by `python -m vos.eval`, and bad input."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, compose_config, tiny_checkpoint
from hydra.utils import instantiate
from PIL import Image

from vos.data.clips import ClipDataset
from vos.data.palette import ImageReadError, write_frame, write_mask
from vos.data.source import DatasetError, VideoSource
from vos.data.sources.youtube import YouTubeVOSSource
from vos.data.synthetic import SyntheticSource
from vos.inference import InferenceEngine
from vos.lightning.training import train
from vos.model.network import VOSNetwork
from vos.model.readers import STMReader

HEIGHT, WIDTH = 48, 64
STEP = 5  # YouTube-VOS's JPEGImages keep every 5th video frame


def name(frame: int) -> str:
    return f"{frame:05d}"


def write_split(
    root: Path,
    split: str,
    videos: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    sparse: bool,
    all_frames: bool = False,
) -> dict[str, dict[int, int]]:
    """Write ``videos`` (``name -> (frames [T, H, W, 3], labels [T, H, W])`` at the full frame
    rate) as a YouTube-VOS split: every 5th frame in ``<split>/JPEGImages``, all of them in
    ``<split>_all_frames/JPEGImages`` when ``all_frames``; masks on every listed frame (train)
    or, when ``sparse`` (valid), only where an object first appears, holding only the objects
    new there. Returns each video's ``{object id: first annotated video frame}``."""
    meta: dict[str, dict] = {}
    firsts: dict[str, dict[int, int]] = {}
    for video, (frames, labels) in videos.items():
        listed = list(range(0, len(frames), STEP))
        for t in listed:
            write_frame(root / split / "JPEGImages" / video / f"{name(t)}.jpg", frames[t])
        if all_frames:
            for t in range(len(frames)):
                path = root / f"{split}_all_frames" / "JPEGImages" / video / f"{name(t)}.jpg"
                write_frame(path, frames[t])
        ids = sorted(int(i) for i in np.unique(labels[listed]) if 0 < i < 255)
        present = {i: [t for t in listed if (labels[t] == i).any()] for i in ids}
        first = {i: frames_in[0] for i, frames_in in present.items()}
        firsts[video] = first
        objects = {}
        for i in ids:
            shown = present[i] if not sparse else [t for t in listed if t >= first[i]]
            objects[str(i)] = {"category": "thing", "frames": [name(t) for t in shown]}
        meta[video] = {"objects": objects}
        for t in listed:
            mask = labels[t]
            if sparse:
                new = [i for i in ids if first[i] == t]
                if not new:
                    continue
                mask = np.where(np.isin(mask, new), mask, 0).astype(np.uint8)
            write_mask(root / split / "Annotations" / video / f"{name(t)}.png", mask)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / split / "meta.json").write_text(json.dumps({"videos": meta}))
    return firsts


def synthetic_videos(split: str, count: int, frames: int, seed: int, **knobs):
    source = SyntheticSource(split, count, frames, seed=seed, height=HEIGHT, width=WIDTH, **knobs)
    return {
        f"yt{index}": (
            np.stack([source.read_frame(video, t) for t in range(frames)]),
            np.stack([source.read_mask(video, t) for t in range(frames)]),
        )
        for index, video in enumerate(source.videos())
    }


def late_video(frames: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Object 1 from frame 0, object 3 (ids skip 2) from frame 10, nothing in frames 0..4 of
    a second copy (see `late_start_video`)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(frames, HEIGHT, WIDTH, 3), dtype=np.uint8)
    labels = np.zeros((frames, HEIGHT, WIDTH), dtype=np.uint8)
    labels[:, 4:20, 4:24] = 1
    labels[10:, 26:44, 30:60] = 3
    return images, labels


def late_start_video(frames: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """No object in frame 0: object 2 first appears in frame 5."""
    images, labels = late_video(frames)
    labels[:] = 0
    labels[5:, 10:30, 10:40] = 2
    return images, labels


@pytest.fixture(scope="module")
def youtube_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("youtube")
    train_videos = synthetic_videos("train", 2, 26, seed=4, late_object_prob=1.0, max_objects=3)
    # ids may skip numbers in YouTube-VOS: relabel the second video's object 2 as 4
    frames, labels = train_videos["yt1"]
    train_videos["yt1"] = (frames, np.where(labels == 2, 4, labels).astype(np.uint8))
    write_split(root, "train", train_videos, sparse=False, all_frames=True)
    write_split(
        root,
        "valid",
        {"late": late_video(), "late_start": late_start_video()},
        sparse=True,
        all_frames=True,
    )
    return root


# ---------------------------------------------------------------------------- reading


def test_train_split_has_a_mask_on_every_listed_frame(youtube_root):
    source = YouTubeVOSSource(youtube_root, "train")
    assert source.videos() == ["yt0", "yt1"]
    info = source.info("yt1")
    assert info.frame_names == [name(t) for t in range(0, 26, STEP)]
    assert info.annotated == list(range(6))
    assert info.frame_step == STEP
    assert 2 not in info.first_frames and 4 in info.first_frames  # ids kept as they are
    labels = np.stack([source.read_mask("yt1", i) for i in range(6)])
    assert set(np.unique(labels)) - {0} == set(info.first_frames)
    assert source.read_frame("yt1", 3).shape == (HEIGHT, WIDTH, 3)
    assert source.submission_folder == "Annotations"


def test_valid_split_objects_join_at_their_first_mask(youtube_root):
    source = YouTubeVOSSource(youtube_root, "valid")
    assert source.videos() == ["late", "late_start"]
    info = source.info("late")
    assert info.frame_names == [name(t) for t in range(0, 30, STEP)]
    assert info.first_frames == {1: 0, 3: 2}  # 00010 is the third listed frame
    assert info.annotated == [0, 2]
    assert source.output_frames("late") == list(range(6))
    assert set(np.unique(source.read_mask("late", 2))) == {0, 3}  # only the new object
    missing = youtube_root / "valid/Annotations/late/00005.png"
    with pytest.raises(DatasetError, match=re.escape(str(missing))):
        source.read_mask("late", 1)
    start = source.info("late_start")
    assert start.first_frames == {2: 1} and start.annotated == [1]


def test_valid_all_frames_segments_every_frame_and_outputs_every_fifth(youtube_root):
    source = YouTubeVOSSource(youtube_root, "valid", all_frames=True)
    info = source.info("late")
    assert info.frame_names == [name(t) for t in range(30)]
    assert info.first_frames == {1: 0, 3: 10}
    assert info.annotated == [0, 10]
    assert info.frame_step == 1
    assert source.output_frames("late") == list(range(0, 30, STEP))
    expected = np.where(late_video()[1][10] == 3, 3, 0)  # only the object new there
    np.testing.assert_array_equal(source.read_mask("late", 10), expected)


def test_configs_build_the_sources(youtube_root):
    for dataset in ("youtube2018", "youtube2019"):
        cfg = compose_config("eval", [f"dataset={dataset}", f"dataset.root={youtube_root}"])
        assert cfg.dataset.name == dataset
        assert instantiate(cfg.dataset.eval).videos() == ["late", "late_start"]
        assert instantiate(cfg.dataset.train).info("yt0").frame_step == STEP
    cfg = compose_config(
        "eval",
        [
            "dataset=youtube2019",
            f"dataset.root={youtube_root}",
            "dataset.all_frames=true",
            "dataset.train_all_frames=true",
        ],
    )
    assert instantiate(cfg.dataset.eval).info("late").num_frames == 30
    assert instantiate(cfg.dataset.train).info("yt0").annotated == list(range(0, 26, STEP))


# ---------------------------------------------------------------------------- training clips


class RecordingSource(VideoSource):
    """Delegates to a source and records which masks training read."""

    def __init__(self, source: VideoSource):
        self.source = source
        self.masks_read: list[tuple[str, int]] = []

    def videos(self):
        return self.source.videos()

    def info(self, video):
        return self.source.info(video)

    def read_frame(self, video, index):
        return self.source.read_frame(video, index)

    def read_mask(self, video, index):
        self.masks_read.append((video, index))
        return self.source.read_mask(video, index)


def clip_frames(source: RecordingSource, **settings) -> list[list[int]]:
    dataset = ClipDataset(
        source,
        length=24,
        num_frames=3,
        crop=None,
        flip_prob=0.0,
        color_jitter=0.0,
        frame_brightness_jitter=0.0,
        **settings,
    )
    clips = []
    for index in range(len(dataset)):
        source.masks_read.clear()
        dataset[index]
        clips.append([t for _, t in source.masks_read[-3:]])
    return clips


def test_clips_skip_in_video_frames_over_every_fifth_frame(youtube_root):
    source = RecordingSource(YouTubeVOSSource(youtube_root, "train"))
    clips = clip_frames(source, max_skip_values=[10], reverse_prob=0.0)
    steps = {b - a for clip in clips for a, b in zip(clip, clip[1:])}
    # max skip 10 video frames = 2 listed frames (STCN's max_skip // 5)
    assert steps <= {0, 1, 2} and 2 in steps


def test_clips_on_all_frames_use_only_annotated_frames(youtube_root):
    source = RecordingSource(YouTubeVOSSource(youtube_root, "train", all_frames=True))
    for sampling in ("stcn", "anywhere", "window", "static"):
        clips = clip_frames(source, sampling=sampling, max_skip_values=[10], reverse_prob=0.5)
        assert all(t % STEP == 0 for clip in clips for t in clip), sampling  # no DatasetError
        if sampling == "stcn":
            steps = {abs(b - a) for clip in clips for a, b in zip(clip, clip[1:])}
            assert steps <= {0, 5, 10} and 10 in steps


def test_training_runs_on_the_youtube_config(youtube_root, tmp_path):
    overrides = [
        item
        for item in TINY
        if not item.startswith(("dataset.", "trainer.val_check", "checkpoint."))
    ]
    cfg = compose_config(
        "train",
        [
            *overrides,
            "dataset=youtube2019",
            f"dataset.root={youtube_root}",
            "trainer.max_steps=2",
            "trainer.val_check_interval=1",  # valid has no masks: validation is skipped
        ],
    )
    metrics = train(cfg, tmp_path / "run")
    assert metrics["global_step"] == 2
    assert "val/J&F-Mean" not in metrics


# ---------------------------------------------------------------------------- inference


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return VOSNetwork(STMReader(8, 16), key_depth=18, value_depth=18, decoder_channels=8).eval()


@pytest.mark.parametrize("all_frames", [False, True])
def test_late_objects_join_at_their_first_mask(youtube_root, network, all_frames):
    source = YouTubeVOSSource(youtube_root, "valid", all_frames=all_frames)
    engine = InferenceEngine(network, mem_every=2, max_memory_frames=4)
    for video in source.videos():
        info = source.info(video)
        result = engine.run_video(source, video)
        for obj, first in info.first_frames.items():
            assert not np.any(result.labels[:first] == obj)  # unknown before its mask
            np.testing.assert_array_equal(
                result.labels[first] == obj, source.read_mask(video, first) == obj
            )
        assert set(np.unique(result.labels)) <= {0, *info.first_frames}
    # no object before frame 00005 of late_start: nothing is predicted there
    assert not engine.run_video(source, "late_start").labels[: 5 if all_frames else 1].any()


# ---------------------------------------------------------------------------- vos.eval


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("run"))


@pytest.fixture
def run_eval(run_command):
    """``python -m vos.eval ARGS`` (its main() in this process)."""
    return lambda *args: run_command("vos.eval", *args)


@pytest.mark.parametrize("all_frames", ["false", "true"])
def test_eval_writes_the_submission_folder_and_zip(
    checkpoint, youtube_root, tmp_path, all_frames, run_eval
):
    out = tmp_path / "pred"
    result = run_eval(
        f"ckpt_path={checkpoint}",
        "dataset=youtube2019",
        f"dataset.root={youtube_root}",
        f"dataset.all_frames={all_frames}",
        f"output_dir={out}",
    )
    assert result.returncode == 0, result.stderr
    # exactly the frames of valid/JPEGImages, as palette PNGs at the frame size
    required = {
        f"Annotations/{video.name}/{frame.stem}.png"
        for video in (youtube_root / "valid/JPEGImages").iterdir()
        for frame in video.glob("*.jpg")
    }
    written = {str(p.relative_to(out)) for p in (out / "Annotations").rglob("*") if p.is_file()}
    assert written == required
    assert {p.name for p in out.iterdir()} == {"Annotations", "submission.zip"}  # not scored
    with zipfile.ZipFile(out / "submission.zip") as archive:
        assert set(archive.namelist()) == required
        with archive.open("Annotations/late/00010.png") as member, Image.open(member) as image:
            assert image.mode == "P" and image.size == (WIDTH, HEIGHT)
            given = np.asarray(image) == 3
    np.testing.assert_array_equal(given, late_video()[1][10] == 3)  # the given mask comes back
    empty = np.asarray(Image.open(out / "Annotations/late_start/00000.png"))
    assert not empty.any()  # before any object appears


# ---------------------------------------------------------------------------- bad input


@pytest.fixture
def valid_root(tmp_path) -> Path:
    root = tmp_path / "yt"
    write_split(root, "valid", {"late": late_video(), "other": late_start_video()}, sparse=True)
    return root


def edit_meta(root: Path, edit) -> None:
    path = root / "valid/meta.json"
    meta = json.loads(path.read_text())
    edit(meta["videos"])
    path.write_text(json.dumps(meta))


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "nowhere"))):
        YouTubeVOSSource(tmp_path / "nowhere")


def test_a_davis_root_is_named_as_such(tmp_path):
    (tmp_path / "JPEGImages/480p").mkdir(parents=True)
    (tmp_path / "Annotations/480p").mkdir(parents=True)
    pattern = re.escape(str(tmp_path / "valid")) + ".*expected a YouTube-VOS layout.*DAVIS layout"
    with pytest.raises(DatasetError, match=pattern):
        YouTubeVOSSource(tmp_path)


def test_split_folder_or_extra_level_given_as_root(valid_root, tmp_path):
    with pytest.raises(DatasetError, match=re.escape(f"did you mean {valid_root}")):
        YouTubeVOSSource(valid_root / "valid")
    with pytest.raises(DatasetError, match=re.escape(f"did you mean {valid_root}")):
        YouTubeVOSSource(tmp_path)


@pytest.mark.parametrize("missing", ["JPEGImages", "Annotations", "meta.json"])
def test_missing_part_of_the_split(valid_root, missing):
    path = valid_root / "valid" / missing
    path.rename(path.with_name("elsewhere"))
    with pytest.raises(DatasetError, match=re.escape(str(path)) + ".*found.*elsewhere"):
        YouTubeVOSSource(valid_root)


def test_bad_meta_json(valid_root):
    (valid_root / "valid/meta.json").write_text("{not json")
    with pytest.raises(DatasetError, match=re.escape(str(valid_root / "valid/meta.json"))):
        YouTubeVOSSource(valid_root)
    (valid_root / "valid/meta.json").write_text(json.dumps({"videos": {"late": {}}}))
    with pytest.raises(DatasetError, match='videos/late has no "objects"'):
        YouTubeVOSSource(valid_root)
    bad_id = {"videos": {"late": {"objects": {"a": {"frames": ["00000"]}}}}}
    (valid_root / "valid/meta.json").write_text(json.dumps(bad_id))
    with pytest.raises(DatasetError, match="videos/late/objects/a: object ids"):
        YouTubeVOSSource(valid_root)


def test_videos_in_meta_missing_on_disk_are_named(valid_root):
    def add(videos):
        videos["ghost"] = videos["phantom"] = videos["late"]

    edit_meta(valid_root, add)
    with pytest.raises(DatasetError, match="without frames .*: ghost, phantom"):
        YouTubeVOSSource(valid_root)


def test_folders_missing_from_meta_are_named(valid_root):
    edit_meta(valid_root, lambda videos: videos.pop("other"))
    with pytest.raises(DatasetError, match="not in meta.json: other"):
        YouTubeVOSSource(valid_root)


def test_meta_first_frame_without_a_mask(valid_root):
    def later(videos):
        videos["late"]["objects"]["3"]["frames"] = ["00015", "00020"]

    edit_meta(valid_root, later)
    expected = valid_root / "valid/Annotations/late/00015.png"
    with pytest.raises(DatasetError, match=r"objects/3 .*" + re.escape(str(expected))):
        YouTubeVOSSource(valid_root).info("late")


def test_meta_first_frame_whose_mask_lacks_the_object(valid_root):
    def earlier(videos):
        videos["late"]["objects"]["3"]["frames"] = ["00000", "00005"]

    edit_meta(valid_root, earlier)
    with pytest.raises(DatasetError, match=r"objects/3 .*00000.*does not contain id 3"):
        YouTubeVOSSource(valid_root).info("late")


def test_mask_with_an_id_meta_does_not_list(valid_root):
    edit_meta(valid_root, lambda videos: videos["late"]["objects"].pop("3"))
    mask = valid_root / "valid/Annotations/late/00010.png"
    with pytest.raises(DatasetError, match=re.escape(str(mask)) + r" holds object ids \[3\]"):
        YouTubeVOSSource(valid_root).info("late")


def test_object_already_in_an_earlier_mask(valid_root):
    first = late_video()[1][0].copy()
    first[40:44, 0:4] = 3  # object 3 in frame 0's mask, but meta says it starts at 00010
    write_mask(valid_root / "valid/Annotations/late/00000.png", first)
    with pytest.raises(DatasetError, match=r"earlier mask .*00000.png already contains id 3"):
        YouTubeVOSSource(valid_root).info("late")


def test_all_frames_folder_missing_or_incomplete(valid_root):
    with pytest.raises(DatasetError, match=re.escape(str(valid_root / "valid_all_frames"))):
        YouTubeVOSSource(valid_root, all_frames=True)
    frames, _ = late_video()
    for video in ("late", "other"):
        for t in range(0, 12):  # frames 00012.. are missing
            path = valid_root / "valid_all_frames/JPEGImages" / video / f"{name(t)}.jpg"
            write_frame(path, frames[t])
    source = YouTubeVOSSource(valid_root, all_frames=True)
    with pytest.raises(DatasetError, match="late lacks 3 frames .*: 00015, 00020, 00025"):
        source.info("late")


def test_mixed_frame_sizes_within_a_video(valid_root):
    odd = valid_root / "valid/JPEGImages/late/00015.jpg"
    write_frame(odd, np.zeros((HEIGHT + 4, WIDTH, 3), dtype=np.uint8))
    source = YouTubeVOSSource(valid_root)
    source.info("late")
    with pytest.raises(DatasetError, match=re.escape(str(odd)) + r" is 64x52 \(WxH\)"):
        source.read_frame("late", 3)


def test_mask_size_or_mode_wrong(valid_root):
    small = valid_root / "valid/Annotations/late/00010.png"
    write_mask(small, np.zeros((HEIGHT // 2, WIDTH), dtype=np.uint8))
    with pytest.raises(DatasetError, match=re.escape(str(small)) + r" is 64x24"):
        YouTubeVOSSource(valid_root).info("late")
    rgb = valid_root / "valid/Annotations/other/00005.png"
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8), mode="RGB").save(rgb)
    with pytest.raises(ImageReadError, match=re.escape(str(rgb))):
        YouTubeVOSSource(valid_root).info("other")


def test_mask_without_a_frame(valid_root):
    stray = valid_root / "valid/Annotations/late/00007.png"
    write_mask(stray, np.zeros((HEIGHT, WIDTH), dtype=np.uint8))
    with pytest.raises(DatasetError, match="have no frame .*00007.png"):
        YouTubeVOSSource(valid_root).info("late")
