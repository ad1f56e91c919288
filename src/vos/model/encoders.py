"""ResNet trunks for the encoders of both architectures (`vos.model.architectures`).

A trunk is a torchvision ResNet's conv1, bn1 and layer1..layer3: features at res2 (1/4),
res3 (1/8) and res4 (1/16). Frames enter in [0, 1] and are normalised inside, as STM's and
HMMN's encoders do (STCN and RMNet normalise in their data loaders: the same function).
Extra inputs (an object's mask, the other objects' mask) get a 7×7 stride-2 conv each whose
response is added to conv1's before bn1: STM's ``conv1_m``/``conv1_o``, and the same function
as STCN's 5-channel conv1.

Weights come from a local torchvision state-dict file, or by torchvision's own name
(``IMAGENET1K_V2``), which torchvision fetches into its cache when the machine is online.
BatchNorm statistics can be frozen (the layers stay in eval mode; their affine parameters
train), as STM, STCN and RMNet do with batch sizes of a few clips.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

# ImageNet statistics: frames enter the network in [0, 1] and are normalised here.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESNETS = {
    18: (torchvision.models.resnet18, torchvision.models.ResNet18_Weights),
    34: (torchvision.models.resnet34, torchvision.models.ResNet34_Weights),
    50: (torchvision.models.resnet50, torchvision.models.ResNet50_Weights),
}


class BackboneWeightsError(ValueError):
    """Backbone weights that cannot be found, fetched or loaded."""


def resnet_channels(depth: int) -> dict[str, int]:
    """Output channels of layer1..layer3 (res2, res3, res4) for a ResNet depth."""
    expansion = 4 if depth >= 50 else 1
    return {"res2": 64 * expansion, "res3": 128 * expansion, "res4": 256 * expansion}


def _is_torchvision_name(weights: str) -> bool:
    """``IMAGENET1K_V2`` or ``ResNet50_Weights.IMAGENET1K_V2``, not a file that exists."""
    if Path(weights).is_file():
        return False
    return "/" not in weights and "." not in weights.split("_Weights.")[-1]


def backbone_state_dict(depth: int, weights: str) -> dict[str, Tensor]:
    """A ResNet state dict from a local file or a torchvision weights name."""
    if _is_torchvision_name(weights):
        enum = _RESNETS[depth][1]
        name = weights.split("_Weights.")[-1]
        if name not in enum.__members__:
            raise BackboneWeightsError(
                f"model.backbone.weights={weights}: torchvision has no such ResNet-{depth} "
                f"weights; choose one of {sorted(enum.__members__)} or a local file path"
            )
        entry = enum[name]
        try:
            return entry.get_state_dict(progress=False)
        except OSError as error:  # URLError and socket errors are OSErrors
            file_name = entry.url.rsplit("/", 1)[-1]
            raise BackboneWeightsError(
                f"model.backbone.weights={weights}: torchvision could not fetch {entry.url} "
                f"({error}); offline, copy that file here and pass its path, "
                f"model.backbone.weights=/path/to/{file_name}"
            ) from error
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights not found: {path} (model.backbone.weights)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def build_resnet(depth: int, weights: str | None) -> nn.Module:
    """A torchvision ResNet of ``depth`` with ``weights`` (a file or a torchvision name)."""
    if depth not in _RESNETS:
        raise ValueError(
            f"model.backbone.depth={depth} is not supported; choose one of {sorted(_RESNETS)}"
        )
    net = _RESNETS[depth][0](weights=None, zero_init_residual=weights is None)
    if weights:
        state = backbone_state_dict(depth, weights)
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shape mismatches
            raise BackboneWeightsError(
                f"backbone weights {weights} do not fit a ResNet-{depth}: {error}"
            ) from error
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing:
            raise BackboneWeightsError(
                f"backbone weights {weights} do not fit a ResNet-{depth}: missing {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''} (unexpected: {unexpected[:5]})"
            )
    return net


class ResNetTrunk(nn.Module):
    """Frame ``[B, 3, H, W]`` in [0, 1] (+ extra 1-channel inputs) -> res2, res3, res4.

    ``extra_inputs`` names the extra channels (``("mask", "others")``): each has its own
    bias-free 7×7 conv, ``conv1_extra[name]``, zero at the start when pretrained weights are
    loaded (the RGB response is unchanged), random otherwise. ``conv_bias`` gives every conv a
    bias (STCN's value encoder is built from a ResNet whose convs have them).
    """

    def __init__(
        self,
        depth: int,
        weights: str | None = None,
        extra_inputs: tuple[str, ...] = (),
        conv_bias: bool = False,
    ):
        super().__init__()
        net = build_resnet(depth, weights)
        self.conv1, self.bn1 = net.conv1, net.bn1
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.channels = resnet_channels(depth)
        self.conv1_extra = nn.ModuleDict()
        for name in extra_inputs:
            conv = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
            if weights:
                nn.init.zeros_(conv.weight)
            else:
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            self.conv1_extra[name] = conv
        if conv_bias:
            extra_convs = {id(conv) for conv in self.conv1_extra.values()}  # conv1's bias serves
            for module in self.modules():
                if (
                    isinstance(module, nn.Conv2d)
                    and module.bias is None
                    and id(module) not in extra_convs
                ):
                    module.bias = nn.Parameter(torch.zeros(module.out_channels))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def extra_inputs(self) -> tuple[str, ...]:
        return tuple(self.conv1_extra)

    def forward(self, frames: Tensor, extra: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """frames ``[N, 3, H, W]``; ``extra`` name -> ``[N, 1, H, W]`` for every extra input."""
        x = self.conv1((frames - self.mean) / self.std)
        extra = extra or {}
        if set(extra) != set(self.conv1_extra):
            raise ValueError(
                f"the encoder takes extra inputs {sorted(self.conv1_extra)}, got {sorted(extra)}"
            )
        for name, conv in self.conv1_extra.items():
            x = x + conv(extra[name])
        x = torch.relu(self.bn1(x))
        res2 = self.layer1(nn.functional.max_pool2d(x, kernel_size=3, stride=2, padding=1))
        res3 = self.layer2(res2)
        return {"res2": res2, "res3": res3, "res4": self.layer3(res3)}


def freeze_batchnorm(module: nn.Module) -> None:
    """Keep every BatchNorm in eval mode (running statistics frozen)."""
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            child.eval()
