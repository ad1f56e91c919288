"""MixedSource and dataset=davis_youtube: several sources as one training split, some
repeated (DAVIS x5 beside YouTube-VOS), with unique video names."""

from __future__ import annotations

from collections import Counter

import pytest
from data_writers import write_youtube_train
from helpers import TINY, compose_config
from hydra.utils import instantiate

from vos.data.clips import ClipDataset
from vos.data.source import DatasetError, VideoSource
from vos.data.sources.davis import DavisSource
from vos.data.sources.mixed import MixedSource
from vos.data.synthetic import SyntheticSource, export_davis
from vos.lightning.training import train


class FrameLog(VideoSource):
    """Delegates to a source and records the videos whose frames are read."""

    def __init__(self, source: VideoSource):
        self.source = source
        self.read: list[str] = []

    def videos(self):
        return self.source.videos()

    def sampling_weights(self):
        return self.source.sampling_weights()

    def info(self, video):
        return self.source.info(video)

    def read_frame(self, video, index):
        self.read.append(video)
        return self.source.read_frame(video, index)

    def read_mask(self, video, index):
        return self.source.read_mask(video, index)


def small(split: str, count: int, seed: int) -> SyntheticSource:
    return SyntheticSource(split, count, 8, seed=seed, height=32, width=48)


def test_names_are_prefixed_and_unique():
    # both sources name their videos syn_train_0000, ...: the prefix keeps them apart
    mixed = MixedSource({"a": small("train", 2, 0), "b": small("train", 3, 1)}, {"a": 5})
    names = mixed.videos()
    assert names == [f"a/syn_train_{i:04d}" for i in range(2)] + [
        f"b/syn_train_{i:04d}" for i in range(3)
    ]
    assert len(set(names)) == len(names)
    assert mixed.info("b/syn_train_0002").name == "b/syn_train_0002"
    assert mixed.origin("b/syn_train_0002") == ("b", "syn_train_0002")
    assert (
        mixed.read_mask("a/syn_train_0001", 3)
        == small("train", 2, 0).read_mask("syn_train_0001", 3)
    ).all()
    assert mixed.sampling_weights() == [5.0, 5.0, 1.0, 1.0, 1.0]
    assert mixed.read_flow_between("a/syn_train_0000", 2, 5).shape == (2, 32, 48)


def test_clips_follow_the_mixing_ratio():
    """Sampled clips' origins over many indices: a source repeated r times with n videos
    gives r·n / Σ r·n of the clips."""
    davis, youtube = small("train", 3, 0), small("train", 12, 1)
    log = FrameLog(MixedSource({"davis": davis, "youtube": youtube}, {"davis": 5}))
    dataset = ClipDataset(log, length=600, num_frames=2, crop=None, flip_prob=0.0, color_jitter=0.0)
    origins, drawn = Counter(), set()
    for index in range(len(dataset)):
        log.read.clear()
        dataset[index]
        drawn.add(log.read[-1])
        origins[log.read[-1].split("/")[0]] += 1
    expected = 5 * 3 / (5 * 3 + 12)  # 0.556
    share = origins["davis"] / len(dataset)
    assert abs(share - expected) < 0.06, (share, expected)  # 3 standard errors
    # every video of each source is drawn
    assert len(drawn) == 15


def test_equal_repeats_draw_as_a_plain_source():
    """Without weights videos are drawn as before (a resumed run replays the same data)."""
    source = small("train", 4, 0)
    mixed = MixedSource({"only": source}, {"only": 3})
    assert mixed.sampling_weights() is None
    plain = ClipDataset(source, length=6, crop=None)
    same = ClipDataset(mixed, length=6, crop=None)
    for index in range(len(plain)):
        assert (plain[index]["frames"] == same[index]["frames"]).all()


@pytest.mark.parametrize(
    ("sources", "repeats", "message"),
    [
        ({}, None, "at least one source"),
        ({"a/b": "S"}, None, "without '/'"),
        ({"a": "S"}, {"b": 2}, "repeats names sources \\['b'\\]"),
        ({"a": "S"}, {"a": 0}, "repeats of 'a' must be > 0"),
        ({"a": 3}, None, "source 'a' is a int"),
    ],
)
def test_bad_mixtures_are_named(sources, repeats, message):
    sources = {k: small("train", 1, 0) if v == "S" else v for k, v in sources.items()}
    with pytest.raises(DatasetError, match=message):
        MixedSource(sources, repeats)


def test_unknown_mixed_video_is_named():
    mixed = MixedSource({"a": small("train", 1, 0)})
    with pytest.raises(DatasetError, match="unknown video 'syn_train_0000'.*<source>/<video>"):
        mixed.info("syn_train_0000")


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    davis = tmp_path_factory.mktemp("davis")
    export_davis(davis, videos_per_split=2, num_frames=30, height=48, width=64)
    youtube = tmp_path_factory.mktemp("youtube")
    write_youtube_train(youtube, videos=3)
    return davis, youtube


def test_davis_youtube_config(roots, tmp_path):
    davis, youtube = roots
    overrides = [item for item in TINY if not item.startswith(("dataset.", "checkpoint."))]
    cfg = compose_config(
        "train",
        [
            *overrides,
            "dataset=davis_youtube",
            f"dataset.root={davis}",
            f"dataset.youtube_root={youtube}",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "data.val_videos=1",
        ],
    )
    source = instantiate(cfg.dataset.train)
    names = source.videos()
    assert names == [f"davis/syn_train_{i:04d}" for i in range(2)] + [
        f"youtube/yt{i}" for i in range(3)
    ]
    assert source.sampling_weights() == [5.0, 5.0, 1.0, 1.0, 1.0]
    assert source.info("youtube/yt1").frame_step == 5  # YouTube-VOS skips stay in video frames
    eval_source = instantiate(cfg.dataset.eval)
    assert isinstance(eval_source, DavisSource) and eval_source.split == "val"
    metrics = train(cfg, tmp_path / "run")  # validated on DAVIS val
    assert metrics["global_step"] == 2
    assert 0.0 <= metrics["val/J&F-Mean"] <= 1.0
