"""Flow estimators for RMNet's query region (§3.3): TinyFlowNet's structure and units, RAFT-small
from a local file, the estimator factory, and the flow-pair training data's conventions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vos.config import compose_config, instantiate
from vos.data.flow_pairs import FlowPairDataset
from vos.data.source import DatasetError, VideoInfo, VideoSource
from vos.data.synthetic import SyntheticSource
from vos.lightning.flow_module import FlowModule
from vos.model.encoders import IMAGENET_MEAN, IMAGENET_STD
from vos.model.flow import (
    OracleFlow,
    RaftSmallFlow,
    TinyFlowNet,
    endpoint_error,
    flow_config,
    raft_small_flow,
    tiny_flow_net,
)
from vos.ops.geometry import warp_backward

ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-4, "weight_decay": 0.0}
CONSTANT = {"_target_": "vos.lightning.optim.ConstantSchedule"}


def flow_source(name: str, **overrides):
    """The flow source ``model/flow=<name>`` builds (``model.flow.<key>=<value>`` overrides)."""
    cfg = compose_config(
        "train",
        [
            "model=rmnet",
            f"model/flow={name}",
            *(f"model.flow.{k}={v}" for k, v in overrides.items()),
        ],
    )
    return instantiate(flow_config(cfg.model.flow))


# Faster motion than the defaults, so a warp by the flow is clearly better than no warp.
FAST = {"height": 64, "width": 96, "motion_speed": 4.0, "pan_speed": 6.0}


@pytest.fixture(autouse=True)
def _one_thread():
    """These nets are tiny at test sizes; with two intra-op threads on a 2-core machine that
    other processes share, a training step measured 1.6 s instead of 0.09 s (thread
    oversubscription), so this module runs single-threaded and restores the setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- TinyFlowNet --------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(50, 70), (64, 64), (33, 129)])
def test_tinyflownet_pads_centred_and_crops_back(height: int, width: int) -> None:
    """Any input size (reference §1.5): the flow is the network's output on the pair padded to
    multiples of 64 with the ImageNet mean colour (zeros after the normalisation, as the
    official ``pad_divide_by`` pads the normalised frames), split evenly between the sides,
    with the padding cropped off again: the same numbers as running it on that padded pair."""
    torch.manual_seed(0)
    net = TinyFlowNet().eval()
    generator = torch.Generator().manual_seed(1)
    frames = [torch.rand(2, 3, height, width, generator=generator) for _ in range(2)]
    pad_h, pad_w = -height % 64, -width % 64
    top, left = pad_h // 2, pad_w // 2
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    padded = [F.pad(f - mean, (left, pad_w - left, top, pad_h - top)) + mean for f in frames]
    with torch.no_grad():
        flow = net(*frames)
        full = net(*padded)
    assert flow.shape == (2, 2, height, width)
    assert full.shape == (2, 2, height + pad_h, width + pad_w)
    assert flow.abs().amax() > 0
    torch.testing.assert_close(flow, full[..., top : top + height, left : left + width])


def test_tinyflownet_sees_imagenet_normalised_frames() -> None:
    """RMNet's data loader normalises the frames before TinyFlowNet: released weights expect
    (x − mean) / std, with I_t first, I_{t−1} second."""
    net = TinyFlowNet().eval()
    seen = []
    net.conv1.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    colour_t, colour_prev = torch.tensor([0.2, 0.5, 0.9]), torch.tensor([0.7, 0.1, 0.4])
    frame_t = colour_t.view(1, 3, 1, 1).expand(1, 3, 64, 64)
    frame_prev = colour_prev.view(1, 3, 1, 1).expand(1, 3, 64, 64)
    with torch.no_grad():
        net(frame_t, frame_prev)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    expected = torch.cat([(colour_t - mean) / std, (colour_prev - mean) / std])
    torch.testing.assert_close(seen[0], expected.view(1, 6, 1, 1).expand(1, 6, 32, 32))


def test_tinyflownet_layer_table() -> None:
    """Reference §1.5: FlowNetS encoder up to conv5_1, LeakyReLU(0.1), no BatchNorm, no
    dilation, no conv6, and the decoder's concatenation widths 770 / 386 / 194."""
    net = TinyFlowNet()
    encoder = {
        "conv1": (6, 64, 7, 2),
        "conv2": (64, 128, 5, 2),
        "conv3": (128, 256, 5, 2),
        "conv3_1": (256, 256, 3, 1),
        "conv4": (256, 512, 3, 2),
        "conv4_1": (512, 512, 3, 1),
        "conv5": (512, 512, 3, 2),
        "conv5_1": (512, 512, 3, 1),
    }
    for name, (cin, cout, kernel, stride) in encoder.items():
        conv, act = getattr(net, name)
        assert (conv.in_channels, conv.out_channels) == (cin, cout), name
        assert conv.kernel_size == (kernel, kernel) and conv.stride == (stride, stride), name
        assert isinstance(act, nn.LeakyReLU) and act.negative_slope == pytest.approx(0.1)
    predictors = {"predict_flow5": 512, "predict_flow4": 770, "predict_flow3": 386}
    predictors["predict_flow2"] = 194
    for name, cin in predictors.items():
        assert getattr(net, name).in_channels == cin and getattr(net, name).out_channels == 2
    for name, (cin, cout) in {"deconv4": (512, 256), "deconv3": (770, 128)}.items():
        deconv = getattr(net, name)[0]
        assert isinstance(deconv, nn.ConvTranspose2d)
        assert (deconv.in_channels, deconv.out_channels) == (cin, cout)
    assert (net.deconv2[0].in_channels, net.deconv2[0].out_channels) == (386, 64)
    for name in ("upsample_flow5_to_4", "upsample_flow4_to_3", "upsample_flow3_to_2"):
        upsampler = getattr(net, name)
        assert isinstance(upsampler, nn.ConvTranspose2d) and upsampler.bias is None
        assert (upsampler.in_channels, upsampler.out_channels, upsampler.stride) == (2, 2, (2, 2))
    modules = list(net.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules)
    assert all(m.dilation == (1, 1) for m in modules if isinstance(m, nn.Conv2d))
    assert not hasattr(net, "conv6")
    # §3.3: about 1/3 of FlowNetS (38,676,506 parameters counted from its layer table)
    count = sum(p.numel() for p in net.parameters())
    assert count == 13_996_468
    assert 0.3 < count / 38_676_506 < 0.4


def test_tinyflownet_output_is_not_rescaled() -> None:
    """flow2 (1/8 resolution) is upsampled without multiplying by 8: a constant flow2 of c
    gives c at every full-resolution pixel (units = full-resolution pixels)."""
    net = TinyFlowNet().eval()
    constant = torch.tensor([2.5, -1.25])
    with torch.no_grad():
        net.predict_flow2.weight.zero_()
        net.predict_flow2.bias.copy_(constant)
        flow = net(torch.rand(1, 3, 50, 70), torch.rand(1, 3, 50, 70))
    assert torch.allclose(flow, constant.view(1, 2, 1, 1).expand_as(flow), atol=1e-6)


def _translation_pair(batch: int, u: int, v: int, size: int = 64):
    """A smooth random texture and a copy moved so that frame(p) = previous(p + (u, v))."""
    generator = torch.Generator().manual_seed(0)
    margin = 8
    texture = torch.rand(
        batch, 3, (size + 2 * margin) // 2, (size + 2 * margin) // 2, generator=generator
    )
    texture = F.interpolate(texture, size=(size + 2 * margin,) * 2, mode="bilinear")
    previous = texture[:, :, margin : margin + size, margin : margin + size]
    frame = texture[:, :, margin + v : margin + v + size, margin + u : margin + u + size]
    flow = torch.tensor([float(u), float(v)]).view(1, 2, 1, 1).expand(batch, 2, size, size)
    return frame.contiguous(), previous.contiguous(), flow.contiguous()


def test_translation_task_conventions_and_training_lowers_epe() -> None:
    """The synthetic translation target is backward flow (warp reproduces the frame), and 30
    Adam steps of L1 training bring TinyFlowNet's EPE below a quarter of its start: the net
    reaches full-resolution pixel values without any output scaling."""
    frame, previous, flow = _translation_pair(batch=2, u=3, v=-2)
    warped, valid = warp_backward(previous, flow)
    assert torch.allclose(warped * valid, frame * valid, atol=1e-5)

    torch.manual_seed(0)
    net = TinyFlowNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    with torch.no_grad():
        start = float(endpoint_error(net(frame, previous), flow))
    for _ in range(30):
        loss = F.l1_loss(net(frame, previous), flow)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        end = float(endpoint_error(net(frame, previous), flow))
    assert end < 0.25 * start and end < 0.6, (start, end)


def test_endpoint_error() -> None:
    predicted = torch.zeros(1, 2, 2, 2)
    target = torch.zeros(1, 2, 2, 2)
    target[0, 0, 0, 0], target[0, 1, 0, 0] = 3.0, 4.0  # one pixel off by 5 px
    assert float(endpoint_error(predicted, target)) == pytest.approx(5 / 4)
    valid = torch.tensor([[[True, False], [False, False]]])
    assert float(endpoint_error(predicted, target, valid)) == pytest.approx(5.0)
    assert float(endpoint_error(predicted, target, valid.unsqueeze(1).float())) == pytest.approx(
        5.0
    )
    with pytest.raises(ValueError):
        endpoint_error(predicted, target[:, :1])


# -- conventions on generated data -------------------------------------------------------------


def _warp_errors(item: dict) -> tuple[float, float, float]:
    """Mean |warp(previous, ±flow) − frame| and |previous − frame| where both warps are valid."""
    frame, previous, flow = item["frame"][None], item["previous"][None], item["flow"][None]
    forward, valid = warp_backward(previous, flow)
    reversed_, valid_reversed = warp_backward(previous, -flow)
    inside = (valid * valid_reversed)[:, 0] > 0
    error = (forward - frame).abs().mean(1)[inside].mean()
    error_reversed = (reversed_ - frame).abs().mean(1)[inside].mean()
    unwarped = (previous - frame).abs().mean(1)[inside].mean()
    return float(error), float(error_reversed), float(unwarped)


@pytest.mark.parametrize(("flip_prob", "max_skip"), [(0.0, 1), (1.0, 1), (0.5, 4)])
def test_flow_pairs_warp_previous_onto_frame(flip_prob: float, max_skip: int) -> None:
    """warp_backward(previous, flow) ≈ frame on SyntheticSource pairs, with and without the
    flip and with skipped pairs: clearly better than no warp and than the opposite flow."""
    source = SyntheticSource("train", 3, 8, seed=0, **FAST)
    dataset = FlowPairDataset(
        source, length=6, seed=1, crop=(48, 80), flip_prob=flip_prob, max_skip=max_skip
    )
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["frame"].shape == item["previous"].shape == (3, 48, 80)
        assert item["flow"].shape == (2, 48, 80) and item["flow"].dtype == torch.float32
        assert float(item["frame"].min()) >= 0.0 and float(item["frame"].max()) <= 1.0
        error, error_reversed, unwarped = _warp_errors(item)
        assert error < 0.03, (index, error)
        assert error < 0.8 * unwarped and error < 0.6 * error_reversed, (index, error)


def test_flow_pairs_flip_mirrors_and_negates_u_and_is_deterministic() -> None:
    source = SyntheticSource("train", 3, 8, seed=0, **FAST)
    plain = FlowPairDataset(source, length=4, seed=3, crop=(48, 80), flip_prob=0.0)
    flipped = FlowPairDataset(source, length=4, seed=3, crop=(48, 80), flip_prob=1.0)
    for index in range(4):
        a, b = plain[index], flipped[index]
        assert torch.equal(b["frame"], a["frame"].flip(-1))
        assert torch.equal(b["previous"], a["previous"].flip(-1))
        assert torch.equal(b["flow"][0], -a["flow"][0].flip(-1))
        assert torch.equal(b["flow"][1], a["flow"][1].flip(-1))
        again = plain[index]
        assert all(torch.equal(again[k], a[k]) for k in ("frame", "previous", "flow"))


class _NoFlowSource(VideoSource):
    def videos(self) -> list[str]:
        return ["v"]

    def info(self, video: str) -> VideoInfo:
        return VideoInfo(video, ["0", "1"], 8, 8, {1: 0}, [0, 1])

    def read_frame(self, video, index):
        raise AssertionError("not reached")

    def read_mask(self, video, index):
        raise AssertionError("not reached")


def test_flow_pairs_need_a_source_with_flow() -> None:
    with pytest.raises(DatasetError, match="no optical flow"):
        FlowPairDataset(_NoFlowSource(), length=2)


# -- estimators ---------------------------------------------------------------------------------


def test_flow_sources_by_config_and_their_errors(tmp_path) -> None:
    assert isinstance(flow_source("tinyflownet"), TinyFlowNet)
    assert isinstance(flow_source("oracle"), OracleFlow)
    assert flow_source("none") is None
    with pytest.raises(ValueError, match="local weights file"):
        flow_source("raft")
    with pytest.raises(FileNotFoundError, match="local weights file"):
        flow_source("raft", weights=tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="model.flow.weights"):
        flow_source("tinyflownet", weights=tmp_path / "missing.pth")


def test_legacy_flow_configs_are_converted() -> None:
    """Checkpoints written before flow sources had a _target_ store {name, weights}."""
    assert flow_config({"name": "oracle", "weights": None}) == {
        "_target_": "vos.model.flow.OracleFlow"
    }
    assert instantiate(flow_config({"name": "none", "weights": None})) is None
    converted = flow_config({"name": "tinyflownet", "weights": "w.ckpt"})
    assert converted == {"_target_": "vos.model.flow.tiny_flow_net", "weights": "w.ckpt"}
    with pytest.raises(ValueError, match="tinyflownet.*raft"):
        flow_config({"name": "flownet2"})


def test_tinyflownet_loads_plain_and_lightning_checkpoints(tmp_path) -> None:
    module = FlowModule(ADAM, CONSTANT)
    reference = module.flow.state_dict()
    torch.save(reference, tmp_path / "plain.pth")
    # a Lightning checkpoint: keys carry FlowModule's attribute name, "flow."
    torch.save({"state_dict": module.state_dict(), "epoch": 0}, tmp_path / "lightning.ckpt")
    # an RMNet run's checkpoint: the frozen estimator inside the network
    prefixed = {f"network.flow_estimator.{k}": v for k, v in reference.items()}
    prefixed["network.reader.bias"] = torch.zeros(1)  # the rest of the network is left out
    torch.save({"state_dict": prefixed}, tmp_path / "network.ckpt")
    for name in ("plain.pth", "lightning.ckpt", "network.ckpt"):
        net = tiny_flow_net(weights=str(tmp_path / name))
        assert not net.training
        loaded = net.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in reference.items()), name


def test_raft_small_from_local_state_dict(tmp_path) -> None:
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = tmp_path / "raft_small.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    estimator = raft_small_flow(weights=str(path), num_flow_updates=2)
    assert isinstance(estimator, RaftSmallFlow) and estimator.num_flow_updates == 2
    with torch.no_grad():
        flow = estimator(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
        odd = estimator(torch.rand(1, 3, 42, 50), torch.rand(1, 3, 42, 50))
    assert flow.shape == (1, 2, 64, 64) and torch.isfinite(flow).all()
    assert odd.shape == (1, 2, 42, 50)


# -- training module ----------------------------------------------------------------------------


def test_flow_module_training_step_and_optimizer() -> None:
    torch.manual_seed(0)
    module = FlowModule({**ADAM, "lr": 3e-4, "weight_decay": 1e-6}, CONSTANT)
    frame, previous, flow = _translation_pair(batch=2, u=1, v=2)
    batch = {"frame": frame, "previous": previous, "flow": flow}
    loss = module.training_step(batch, 0)
    assert loss.ndim == 0 and math.isfinite(float(loss.detach())) and loss.requires_grad
    loss.backward()
    assert module.flow.predict_flow2.weight.grad is not None
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)
    assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(1e-6)
    with torch.no_grad():
        epe = module.validation_step(batch, 0)
    assert math.isfinite(float(epe))
