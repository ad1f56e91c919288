"""Key and value encoders on torchvision ResNets (STCN's split: keys do not depend on masks).

The key encoder sees the frame only, so one key per frame serves every object, and the same
features serve as memory key and query key. The value encoder sees the frame, the object's
mask and the other objects' mask, and is run once per object.

Weights come from a local torchvision state-dict file when given, never from a download.
BatchNorm statistics are frozen (the layers stay in eval mode; their affine parameters train),
as STM, STCN and RMNet do with batch sizes of a few clips.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from vos.model.blocks import ResBlock

# ImageNet statistics: frames enter the network in [0, 1] and are normalised here.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESNETS = {
    18: torchvision.models.resnet18,
    34: torchvision.models.resnet34,
    50: torchvision.models.resnet50,
}


def resnet_channels(depth: int) -> dict[str, int]:
    """Output channels of layer1..layer3 (res2, res3, res4) for a ResNet depth."""
    expansion = 4 if depth >= 50 else 1
    return {"res2": 64 * expansion, "res3": 128 * expansion, "res4": 256 * expansion}


def build_resnet(depth: int, weights: str | None, extra_in_channels: int = 0) -> nn.Module:
    """A torchvision ResNet with optional extra input channels and local weights.

    Extra input channels (masks) get zero-initialised filters when weights are loaded, so
    the pretrained RGB response is unchanged at the start of training.
    """
    if depth not in _RESNETS:
        raise ValueError(
            f"model.backbone.depth={depth} is not supported; choose one of {sorted(_RESNETS)}"
        )
    net = _RESNETS[depth](weights=None, zero_init_residual=weights is None)
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights not found: {path} (model.backbone.weights)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shape mismatches
            raise ValueError(
                f"backbone weights {path} do not fit a ResNet-{depth}: {error}"
            ) from error
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing:
            raise ValueError(
                f"backbone weights {path} do not fit a ResNet-{depth}: missing {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''} (unexpected: {unexpected[:5]})"
            )
    if extra_in_channels:
        old = net.conv1
        conv1 = nn.Conv2d(3 + extra_in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        with torch.no_grad():
            if weights:
                conv1.weight.zero_()
                conv1.weight[:, :3] = old.weight
            else:
                nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
        net.conv1 = conv1
    net.fc = nn.Identity()
    return net


class _ResNetTrunk(nn.Module):
    def __init__(self, depth: int, weights: str | None, extra_in_channels: int):
        super().__init__()
        net = build_resnet(depth, weights, extra_in_channels)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.channels = resnet_channels(depth)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalise(self, frames: Tensor) -> Tensor:
        return (frames - self.mean) / self.std


class KeyEncoder(_ResNetTrunk):
    """Frame ``[B, 3, H, W]`` in [0, 1] -> features at res2 (1/4), res3 (1/8), res4 (1/16)."""

    def __init__(self, depth: int = 50, weights: str | None = None):
        super().__init__(depth, weights, extra_in_channels=0)

    def forward(self, frames: Tensor) -> dict[str, Tensor]:
        x = self.stem(self.normalise(frames))
        res2 = self.layer1(x)
        res3 = self.layer2(res2)
        res4 = self.layer3(res3)
        return {"res2": res2, "res3": res3, "res4": res4}


class ValueEncoder(_ResNetTrunk):
    """Frame + object mask + other objects' mask -> per-object values.

    res4: the trunk's res4 output fused with the key encoder's res4 features (STCN's fusion).
    ``fine_value_channels`` (HMMN) adds values at res3/res2: a 3×3 conv on the trunk's
    (mask-aware) features at that scale, as HMMN's memory encoder has a key/value head per scale.
    With ``fine_frame_feature_channels`` (LMRC) the conv sees the trunk's features concatenated
    with the key encoder's features at that scale, as the res4 value does.
    """

    def __init__(
        self,
        value_channels: int,
        key_feature_channels: int,
        depth: int = 18,
        weights: str | None = None,
        fine_value_channels: dict[str, int] | None = None,
        fine_frame_feature_channels: dict[str, int] | None = None,
    ):
        super().__init__(depth, weights, extra_in_channels=2)
        frame_channels = dict(fine_frame_feature_channels or {})
        hidden = self.channels["res4"]
        self.fuse = nn.Sequential(
            ResBlock(hidden + key_feature_channels, value_channels), ResBlock(value_channels)
        )
        self.fine_value = nn.ModuleDict(
            {
                scale: nn.Conv2d(
                    self.channels[scale] + frame_channels.get(scale, 0), channels, 3, padding=1
                )
                for scale, channels in (fine_value_channels or {}).items()
            }
        )
        # the key encoder's features this encoder reads, per scale
        self.uses_features = ("res4", *(s for s in self.fine_value if s in frame_channels))

    def forward(
        self, frames: Tensor, frame_features: dict[str, Tensor], masks: Tensor, others: Tensor
    ) -> dict[str, Tensor]:
        """frames ``[B·O, 3, H, W]``, the key encoder's features at ``uses_features``
        ``[B·O, C, ·, ·]``, masks/others ``[B·O, 1, H, W]``
        -> ``{"res4": [B·O, Cv, h, w], <fine scale>: [B·O, Cv_s, ·, ·]}``."""
        x = torch.cat([self.normalise(frames), masks, others], dim=1)
        trunk = {"res2": self.layer1(self.stem(x))}
        trunk["res3"] = self.layer2(trunk["res2"])
        trunk["res4"] = self.layer3(trunk["res3"])
        values = {"res4": self.fuse(torch.cat([trunk["res4"], frame_features["res4"]], dim=1))}
        for scale, conv in self.fine_value.items():
            if scale in frame_features:
                values[scale] = conv(torch.cat([trunk[scale], frame_features[scale]], dim=1))
            else:
                values[scale] = conv(trunk[scale])
        return values


def freeze_batchnorm(module: nn.Module) -> None:
    """Keep every BatchNorm in eval mode (running statistics frozen)."""
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            child.eval()
