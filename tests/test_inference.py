import numpy as np
import pytest
import torch

from vos.data.synthetic import SyntheticSource
from vos.inference import InferenceEngine, processing_size
from vos.inference.engine import label_argmax
from vos.model.network import VOSNetwork
from vos.model.readers import STMReader


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return VOSNetwork(STMReader(8, 16), key_depth=18, value_depth=18, decoder_channels=8).eval()


@pytest.fixture(scope="module")
def source():
    return SyntheticSource("val", 12, 40, seed=1, height=48, width=64)


def _video_with_late_object(source):
    for video in source.videos():
        if any(first > 0 for first in source.info(video).first_frames.values()):
            return video
    pytest.fail("no video with a late object in the fixture split")


def test_memory_cap_holds_on_long_video(network):
    long_source = SyntheticSource("val", 1, 80, seed=2, height=32, width=48)
    engine = InferenceEngine(network, mem_every=2, include_previous=True, max_memory_frames=3)
    result = engine.run_video(long_source, long_source.videos()[0])
    assert max(result.memory_frames) == 4  # 3 memory frames + the previous frame
    # frame 78 reads 3 memory frames + frame 77; frame 79 reads 3 (its previous is memory)
    assert result.memory_frames[-2:] == [4, 3]
    unbounded = InferenceEngine(
        network, mem_every=2, include_previous=False, max_memory_frames=None
    )
    assert unbounded.run_video(long_source, long_source.videos()[0]).memory_frames[-1] == 40


def test_given_masks_and_late_objects(network, source):
    video = _video_with_late_object(source)
    info = source.info(video)
    engine = InferenceEngine(network, mem_every=5, max_memory_frames=4)
    result = engine.run_video(source, video)
    assert result.labels.shape == (info.num_frames, info.height, info.width)
    for obj, first in info.first_frames.items():
        # no object is predicted before its mask is given
        assert not np.any(result.labels[:first] == obj)
        # the given mask is honoured on its frame
        given = source.read_mask(video, first) == obj
        assert np.all(result.labels[first][given] == obj)
    assert set(np.unique(result.labels)) <= {0, *info.first_frames}


def test_processing_size_resizes_and_restores(network, source):
    engine = InferenceEngine(network, size=32)
    video = source.videos()[0]
    result = engine.run_video(source, video, max_frames=3)
    assert result.labels.shape == (3, 48, 64)
    assert processing_size(48, 64, 32) == (32, 43)
    assert processing_size(48, 64, None) == (48, 64)


def test_invalid_mem_every(network):
    with pytest.raises(ValueError, match="mem_every"):
        InferenceEngine(network, mem_every=0)


def test_label_argmax_is_argmax_with_the_first_of_equal_maxima():
    probs = torch.rand(4, 30, 40, generator=torch.Generator().manual_seed(0))
    probs[2, :5] = probs[1, :5] = 2.0  # ties: the first label wins, as with argmax
    assert torch.equal(label_argmax(probs), probs.argmax(dim=0))
    assert torch.equal(label_argmax(probs[:1]), torch.zeros(30, 40, dtype=torch.long))
