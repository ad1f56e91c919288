"""Optical flow for RMNet's query region (Xie et al., CVPR 2021, §3.1.2 and §3.3).

RMNet tracks each object's region into the query frame by warping the previous mask with
backward flow (t → t−1; see `vos.ops.geometry.warp_backward`). The paper estimates that flow
with **TinyFlowNet** (§3.3), a FlowNetS variant without correlation, cost-volume or dilated
layers, fed frames downscaled by 2; Table 7 swaps in FlowNet2-CSS or RAFT and finds the
segmentation almost unchanged while TinyFlowNet is 6× / 16× faster.

Every estimator here has one contract: ``forward(frame_t, frame_prev) -> flow [B, 2, H, W]``,
frames RGB in [0, 1] ``[B, 3, H, W]``, flow in pixels at full resolution mapping frame t to
frame t−1 (``warp_backward(frame_prev, flow)`` reproduces ``frame_t``).

- `TinyFlowNet`: the paper's network, trained separately with L1 against ground-truth flow
  (reference §1.6: RMNet and TinyFlowNet are never trained jointly) by ``python -m
  vos.train_flow`` (`vos.lightning.flow_module.FlowModule`).
- `RaftSmallFlow`: torchvision's RAFT-small (Table 7's RAFT row), weights from a local file.

``model/flow=`` chooses the flow source by ``_target_``: `tiny_flow_net`, `raft_small_flow`,
`OracleFlow` (the dataset's flow) or `no_flow`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from vos.checkpoint import read_state_dict
from vos.model.encoders import IMAGENET_MEAN, IMAGENET_STD

# TinyFlowNet's input is padded to this multiple (reference §1.5): after the 0.5 downscale
# the five stride-2 convs then land on whole pixels.
TINY_PAD_MULTIPLE = 64
# RAFT works on a 1/8 feature grid, so its input sides must be multiples of 8; its
# 4-level correlation pyramid also needs that grid to be at least 16 cells (128 px) a side.
RAFT_PAD_MULTIPLE = 8
RAFT_MIN_SIDE = 128
LEAKY_SLOPE = 0.1


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Sequential:
    """Conv + LeakyReLU(0.1), 'same' padding, no BatchNorm (reference §1.5)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    )


def _deconv(in_channels: int, out_channels: int) -> nn.Sequential:
    """×2 transposed conv (k4, s2, p1) + LeakyReLU(0.1): the decoder's feature up-sampler."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    )


def _flow_upsampler() -> nn.ConvTranspose2d:
    """×2 learned up-sampling of a coarse flow (2→2, k4, s2, p1, no bias)."""
    return nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1, bias=False)


def _predict_flow(in_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, 2, 3, padding=1)


def _centred_padding(
    height: int, width: int, multiple: int, min_side: int = 0
) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding that makes both sides multiples of ``multiple`` (and
    at least ``min_side``), split evenly between the two sides as the official
    ``pad_divide_by`` does."""
    pad_h = max(min_side - height, 0) + (-max(height, min_side)) % multiple
    pad_w = max(min_side - width, 0) + (-max(width, min_side)) % multiple
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def _crop(flow: Tensor, padding: tuple[int, int, int, int], height: int, width: int) -> Tensor:
    left, _, top, _ = padding
    return flow[..., top : top + height, left : left + width]


def _check_pair(frame_t: Tensor, frame_prev: Tensor, who: str) -> None:
    if frame_t.ndim != 4 or frame_t.shape[1] != 3 or frame_t.shape != frame_prev.shape:
        raise ValueError(
            f"{who}: frames must both be [B, 3, H, W] of the same shape, got "
            f"{tuple(frame_t.shape)} and {tuple(frame_prev.shape)}"
        )


class TinyFlowNet(nn.Module):
    """RMNet's TinyFlowNet (§3.3; layer table: reference-implementations §1.5).

    A FlowNetS encoder cut after conv5_1 (no conv6, no correlation / cost-volume / dilated
    layers, no BatchNorm; every conv followed by LeakyReLU(0.1)) and a FlowNetS-style
    refinement decoder from predict_flow5 down to predict_flow2:

    ============  ===========  ======  ======
    layer         in → out     kernel  stride
    ============  ===========  ======  ======
    conv1         6 → 64       7       2
    conv2         64 → 128     5       2
    conv3         128 → 256    5       2
    conv3_1       256 → 256    3       1
    conv4         256 → 512    3       2
    conv4_1       512 → 512    3       1
    conv5         512 → 512    3       2
    conv5_1       512 → 512    3       1
    ============  ===========  ======  ======

    Decoder: predict_flow5 (512→2); deconv4 (512→256) ‖ conv4 ‖ flow5↑ = 770 →
    predict_flow4; deconv3 (770→128) ‖ conv3 ‖ flow4↑ = 386 → predict_flow3; deconv2 (386→64)
    ‖ conv2 ‖ flow3↑ = 194 → predict_flow2. The flow up-samplers are ConvTranspose 2→2 (k4, s2,
    p1) without bias; deconvs are ConvTranspose k4 s2 p1 + LeakyReLU.

    Forward (§1.5): normalise both frames with ImageNet's mean and std (as the released code's
    data loader does before TinyFlowNet), pad them to a multiple of 64 (zeros there, i.e. the
    mean colour; centred), downscale by 0.5
    (bilinear; §3.3 "downsampled by 2"), concatenate ``[I_t, I_{t−1}]``, run, take flow2 (1/8
    of the padded input), upsample ×8 bilinearly **without** scaling the values (the net
    learns full-resolution pixel units from the full-resolution L1 target, §1.6), crop the
    padding. Only flow2 is used; there is no multi-scale loss.

    Size (§3.3: "1/3 the size of FlowNetS"): measured here 13,996,468 parameters, vs
    38,676,506 for FlowNetS (its 6-channel, no-BatchNorm layer table with conv6/conv6_1,
    deconv5 and predict_flow6, built the same way and counted): 0.36×. Most of the saving is
    the dropped conv6 stage (1024 channels at 1/64).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _conv(6, 64, 7, 2)
        self.conv2 = _conv(64, 128, 5, 2)
        self.conv3 = _conv(128, 256, 5, 2)
        self.conv3_1 = _conv(256, 256, 3, 1)
        self.conv4 = _conv(256, 512, 3, 2)
        self.conv4_1 = _conv(512, 512, 3, 1)
        self.conv5 = _conv(512, 512, 3, 2)
        self.conv5_1 = _conv(512, 512, 3, 1)

        self.predict_flow5 = _predict_flow(512)
        self.upsample_flow5_to_4 = _flow_upsampler()
        self.deconv4 = _deconv(512, 256)
        self.predict_flow4 = _predict_flow(512 + 256 + 2)
        self.upsample_flow4_to_3 = _flow_upsampler()
        self.deconv3 = _deconv(770, 128)
        self.predict_flow3 = _predict_flow(256 + 128 + 2)
        self.upsample_flow3_to_2 = _flow_upsampler()
        self.deconv2 = _deconv(386, 64)
        self.predict_flow2 = _predict_flow(128 + 64 + 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal weights for the LeakyReLU(0.1) slope, zero biases (reference §1.6:
        kaiming_normal on the new layers)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, a=LEAKY_SLOPE, nonlinearity="leaky_relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, frame_t: Tensor, frame_prev: Tensor) -> Tensor:
        """Backward flow ``[B, 2, H, W]`` (t → t−1, pixels) from frames in [0, 1]."""
        _check_pair(frame_t, frame_prev, "TinyFlowNet")
        height, width = frame_t.shape[-2:]
        padding = _centred_padding(height, width, TINY_PAD_MULTIPLE)
        # the released network sees ImageNet-normalised frames (RMNet's data loader), padded
        # with zeros there, i.e. with the mean colour
        mean = frame_t.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1).repeat(1, 2, 1, 1)
        std = frame_t.new_tensor(IMAGENET_STD).view(1, 3, 1, 1).repeat(1, 2, 1, 1)
        pair = (torch.cat([frame_t, frame_prev], dim=1) - mean) / std
        pair = F.pad(pair, padding)
        pair = F.interpolate(pair, scale_factor=0.5, mode="bilinear", align_corners=False)

        out_conv2 = self.conv2(self.conv1(pair))
        out_conv3 = self.conv3_1(self.conv3(out_conv2))
        out_conv4 = self.conv4_1(self.conv4(out_conv3))
        out_conv5 = self.conv5_1(self.conv5(out_conv4))

        flow5 = self.predict_flow5(out_conv5)
        concat4 = torch.cat(
            [out_conv4, self.deconv4(out_conv5), self.upsample_flow5_to_4(flow5)], dim=1
        )
        flow4 = self.predict_flow4(concat4)
        concat3 = torch.cat([out_conv3, self.deconv3(concat4), self.upsample_flow4_to_3(flow4)], 1)
        flow3 = self.predict_flow3(concat3)
        concat2 = torch.cat([out_conv2, self.deconv2(concat3), self.upsample_flow3_to_2(flow3)], 1)
        flow2 = self.predict_flow2(concat2)  # 1/8 of the padded full-resolution input

        # No ×8 on the values: flow2 is already in full-resolution pixels (see the docstring).
        flow = F.interpolate(flow2, scale_factor=8, mode="bilinear", align_corners=False)
        return _crop(flow, padding, height, width)


class RaftSmallFlow(nn.Module):
    """torchvision's RAFT-small (Teed & Deng, ECCV 2020; RMNet Table 7's RAFT row) behind the
    estimator contract. Weights come only from a local file (a plain state dict of
    ``torchvision.models.optical_flow.raft_small``); nothing is downloaded.

    RAFT's ``forward(img1, img2)`` returns flow from img1 to img2, i.e. for each pixel of img1
    where it lies in img2; calling it with (frame_t, frame_prev) gives backward flow. Inputs are
    mapped to [-1, 1] and replicate-padded (centred) to a multiple of 8, and to at least 128 px a
    side (torchvision's RAFT refuses smaller inputs: its correlation pyramid needs a 16-cell
    feature map; small test inputs are therefore padded up); the last of
    ``num_flow_updates`` refinements is returned, cropped.
    """

    def __init__(self, weights: str | Path | None, num_flow_updates: int = 12) -> None:
        super().__init__()
        from torchvision.models.optical_flow import raft_small

        if weights is None:
            raise ValueError(
                "RAFT-small needs a local weights file (model.flow.weights=PATH to a state dict "
                "of torchvision's raft_small); this suite never downloads weights"
            )
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"RAFT-small local weights file not found: {path} (model.flow.weights must name "
                "a state dict of torchvision's raft_small saved on this machine)"
            )
        if num_flow_updates < 1:
            raise ValueError(f"num_flow_updates must be >= 1, got {num_flow_updates}")
        self.raft = raft_small(weights=None, progress=False)
        self.raft.load_state_dict(read_state_dict(path, "model.flow.weights", ("raft.",)))
        self.num_flow_updates = int(num_flow_updates)

    def forward(self, frame_t: Tensor, frame_prev: Tensor) -> Tensor:
        _check_pair(frame_t, frame_prev, "RaftSmallFlow")
        height, width = frame_t.shape[-2:]
        padding = _centred_padding(height, width, RAFT_PAD_MULTIPLE, RAFT_MIN_SIDE)
        image_t = F.pad(frame_t * 2 - 1, padding, mode="replicate")
        image_prev = F.pad(frame_prev * 2 - 1, padding, mode="replicate")
        flows = self.raft(image_t, image_prev, num_flow_updates=self.num_flow_updates)
        return _crop(flows[-1], padding, height, width)


class OracleFlow:
    """``model/flow=oracle``: the dataset's own flow (exact for the generated data), which the
    official RMNet code trains with (reference §1.6). Not a network: the engine and the data
    module read the flow from the source instead."""


def no_flow() -> None:
    """``model/flow=none``: no flow; the query region falls back to the whole frame."""
    return None


def tiny_flow_net(weights: str | Path | None = None) -> TinyFlowNet:
    """`TinyFlowNet` in eval mode; ``weights`` (optional) is a plain state dict or a checkpoint
    of ``python -m vos.train_flow`` (`vos.lightning.flow_module.FlowModule`, keys ``flow.``) or
    of an RMNet run (keys ``network.flow_estimator.``). Without weights it is random (only
    useful for training it)."""
    network = TinyFlowNet()
    if weights is not None:
        prefixes = ("flow.", "network.flow_estimator.", "network.")
        state = read_state_dict(weights, "model.flow.weights", prefixes=prefixes)
        network.load_state_dict(state)
    return network.eval()


def raft_small_flow(weights: str | Path | None, num_flow_updates: int = 12) -> RaftSmallFlow:
    """`RaftSmallFlow` in eval mode; ``weights`` must be a local state-dict file."""
    return RaftSmallFlow(weights, num_flow_updates).eval()


# model.flow as checkpoints written before flow sources were registered by _target_ store it
LEGACY_FLOW_TARGETS = {
    "none": "vos.model.flow.no_flow",
    "oracle": "vos.model.flow.OracleFlow",
    "tinyflownet": "vos.model.flow.tiny_flow_net",
    "raft": "vos.model.flow.raft_small_flow",
}


def flow_config(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """``model.flow`` in the ``_target_`` form; a legacy ``{name, weights}`` is converted."""
    cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    if "_target_" in cfg or "name" not in cfg:
        return cfg
    name = str(cfg.pop("name")).lower()
    if name not in LEGACY_FLOW_TARGETS:
        raise ValueError(
            f"model.flow.name={name!r} is not a flow source; choose model/flow="
            f"{'|'.join(LEGACY_FLOW_TARGETS)}"
        )
    if name in ("none", "oracle"):
        cfg.pop("weights", None)
    return {"_target_": LEGACY_FLOW_TARGETS[name], **cfg}


def endpoint_error(predicted: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean end-point error in pixels: the Euclidean distance between flow vectors ``[B, 2,
    H, W]``, averaged over all pixels or over ``valid`` ones (``[B, H, W]`` or ``[B, 1, H, W]``,
    bool or 0/1). With no valid pixel the result is 0."""
    if predicted.shape != target.shape or predicted.ndim != 4 or predicted.shape[1] != 2:
        raise ValueError(
            f"endpoint_error: flows must both be [B, 2, H, W], got {tuple(predicted.shape)} "
            f"and {tuple(target.shape)}"
        )
    distance = (predicted - target).norm(dim=1)  # [B, H, W]
    if valid is None:
        return distance.mean()
    weight = valid.reshape(distance.shape).to(distance.dtype)
    return (distance * weight).sum() / weight.sum().clamp(min=1)
