"""Released checkpoints of STM, STCN, HMMN and RMNet as the suite's networks.

Each mode maps the official parameter names onto the network its paper uses here
(``model=<reader> model/size=paper`` on its `model/arch`) and stores, with the weights, the
model config and the official inference protocol, so that ``python -m vos.eval
ckpt_path=OUT.ckpt`` runs the authors' inference with no other flag.

The map is strict: every tensor of the file is used (BatchNorm's ``num_batches_tracked`` and
STM's normalisation constants excepted, the latter checked), every parameter and buffer of the
network is filled, shapes must agree; the first mismatch is named otherwise.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor

from vos.checkpoint import read_checkpoint
from vos.config import CONFIG_DIR
from vos.files import write_atomic
from vos.model.encoders import IMAGENET_MEAN, IMAGENET_STD
from vos.model.network import FLOW_ESTIMATOR_PREFIX, build_network

NETWORK_PREFIX = "network."  # as a `vos.train` checkpoint holds the network


class ConversionError(ValueError):
    """A file that does not fit the mode's network."""


@dataclass(frozen=True)
class Release:
    """What a mode's released file becomes: the model config and the inference protocol."""

    model: str  # model=<name>
    overrides: tuple[str, ...] = ()
    inference: dict[str, Any] = field(default_factory=dict)
    section: str | None = None  # the file's sub-dict holding the network (RMNet: "rmnet")
    flow_section: str | None = None  # the sub-dict holding the flow network (RMNet)


# STM's eval_DAVIS.py (and HMMN's, RMNet's test): every 5th frame + the previous frame, no cap
_STM_PROTOCOL = {"mem_every": 5, "include_previous": True, "max_memory_frames": None}

RELEASES: dict[str, Release] = {
    "stm": Release("stm", inference=_STM_PROTOCOL),
    # eval_davis.py: --top 20, mem_every 5, the last frame not kept (include_last off)
    "stcn": Release(
        "stcn",
        inference={"mem_every": 5, "include_previous": False, "max_memory_frames": None},
    ),
    # eval_DAVIS.py: Memory(gaussian_kernel=3, flow_window=7), σ·(1 + 0.5·d) per older frame
    # centred by the released code's double tracking step, top-k 32 at res3 (8 at res2) over
    # the first and previous frames
    "hmmn": Release(
        "hmmn",
        overrides=(
            "model.reader.sigma_rule=official",
            "model.reader.track_rule=official",
            "model.reader.window=7",
            "model.reader.top_k=32",
            "model.reader.fine_memory=first_previous",
        ),
        inference=_STM_PROTOCOL,
    ),
    # core/test.py: the released generator's semantics (box maps multiplied into keys/values)
    # and TinyFlowNet's flow for the query region
    "rmnet": Release(
        "rmnet",
        overrides=("model/flow=tinyflownet", "model.reader.region_semantics=official"),
        inference=_STM_PROTOCOL,
        section="rmnet",
        flow_section="tflownet",
    ),
}
MODES = tuple(RELEASES)


def official_table(mode: str) -> dict[str, Any]:
    """The parameter table of a mode's released checkpoint (`tables/<mode>.json`)."""
    text = resources.files("vos.model.official").joinpath("tables", f"{mode}.json").read_text()
    return json.loads(text)


# -- names ----------------------------------------------------------------------------------
_STM_FAMILY_RULES: list[tuple[str, str]] = [
    (r"^(Encoder_Q|encoder_query)\.", "encoders.query_encoder."),
    (r"^(Encoder_M|encoder_memory)\.", "encoders.memory_encoder."),
    (r"^(encoders\.\w+_encoder)\.res2\.", r"\1.layer1."),
    (r"^(encoders\.\w+_encoder)\.res3\.", r"\1.layer2."),
    (r"^(encoders\.\w+_encoder)\.res4\.", r"\1.layer3."),
    (r"\.conv1_m\.weight$", ".conv1_extra.mask.weight"),
    (r"\.conv1_o\.weight$", ".conv1_extra.others.weight"),
    (r"^KV_M_r(\d)\.Key\.", r"encoders.memory_key.res\1."),
    (r"^KV_M_r(\d)\.Value\.", r"encoders.memory_value.res\1."),
    (r"^KV_Q_r(\d)\.Key\.", r"encoders.query_key.res\1."),
    (r"^KV_Q_r4\.Value\.", "encoders.query_value."),
    (r"^kv_memory\.key_conv\.", "encoders.memory_key.res4."),
    (r"^kv_memory\.value_conv\.", "encoders.memory_value.res4."),
    (r"^kv_query\.key_conv\.", "encoders.query_key.res4."),
    (r"^kv_query\.value_conv\.", "encoders.query_value."),
    (r"^Decoder\.", "decoder."),
    (r"^decoder\.pred2\.", "decoder.pred."),
]
_STCN_RULES: list[tuple[str, str]] = [
    (r"^key_encoder\.res2\.", "encoders.key_encoder.layer1."),
    (r"^key_encoder\.", "encoders.key_encoder."),
    (r"^key_proj\.key_proj\.", "encoders.key_projection.res4."),
    (r"^key_comp\.", "encoders.query_value."),
    (
        r"^value_encoder\.fuser\.attention\.ChannelGate\.mlp\.1\.",
        "encoders.fuser.attention.channel_mlp.0.",
    ),
    (
        r"^value_encoder\.fuser\.attention\.ChannelGate\.mlp\.3\.",
        "encoders.fuser.attention.channel_mlp.2.",
    ),
    (
        r"^value_encoder\.fuser\.attention\.SpatialGate\.spatial\.conv\.",
        "encoders.fuser.attention.spatial_conv.",
    ),
    (r"^value_encoder\.fuser\.", "encoders.fuser."),
    (r"^value_encoder\.", "encoders.value_encoder."),
]
_FLOW_RULES: list[tuple[str, str]] = [(r"^upsampled_flow", "upsample_flow")]
# STM's and STCN's residual blocks call their skip conv `downsample` (a conv, not ResNet's
# `downsample.0` Sequential)
_RESBLOCK_SKIP = (r"\.downsample\.(weight|bias)$", r".skip.\1")


def suite_name(mode: str, name: str) -> str:
    """The suite's parameter name of an official one (module prefix already removed)."""
    rules = _STCN_RULES if mode == "stcn" else _STM_FAMILY_RULES
    for pattern, replacement in [*rules, _RESBLOCK_SKIP]:
        name = re.sub(pattern, replacement, name)
    return name


def _ignored(name: str) -> bool:
    return name.endswith("num_batches_tracked")


# -- state dicts ----------------------------------------------------------------------------
def _strip_prefix(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if prefix and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _check_normalisation(name: str, value: Tensor) -> None:
    expected = IMAGENET_MEAN if name.endswith("mean") else IMAGENET_STD
    if not torch.allclose(value.flatten().float(), torch.tensor(expected), atol=1e-6):
        raise ConversionError(
            f"{name} is {value.flatten().tolist()}, not ImageNet's {list(expected)}: the suite's "
            "encoders normalise with ImageNet's statistics"
        )


def convert_state(
    mode: str, official: Mapping[str, Tensor], target: Mapping[str, Tensor], where: str = "file"
) -> dict[str, Tensor]:
    """The suite's state dict (keys of ``target``) from an official one, strictly."""
    converted: dict[str, Tensor] = {}
    for name, value in official.items():
        if _ignored(name):
            continue
        if re.search(r"^(Encoder_[MQ])\.(mean|std)$", name):
            _check_normalisation(name, value)
            continue
        if mode == "stcn" and name == "value_encoder.conv1.weight":
            converted.update(_split_stcn_value_conv1(value, where))
            continue
        ours = suite_name(mode, name)
        if ours not in target:
            raise ConversionError(
                f"{where}: tensor {name!r} has no place in the suite's {mode} network (as "
                f"{ours!r}); is this a released {mode} file? (--from chooses the format)"
            )
        if tuple(value.shape) != tuple(target[ours].shape):
            raise ConversionError(
                f"{where}: {name!r} has shape {list(value.shape)}; the suite's {ours!r} needs "
                f"{list(target[ours].shape)} (a different width or model size?)"
            )
        converted[ours] = value.detach().clone()
    for ours in target:
        if ours not in converted and not _ignored(ours):
            raise ConversionError(
                f"{where}: nothing fills the suite's {ours!r} (no official tensor maps to it); "
                f"the file lacks a part of the {mode} network"
            )
    return converted


def _split_stcn_value_conv1(weight: Tensor, where: str) -> dict[str, Tensor]:
    """STCN's value conv1 on (R, G, B, mask, others) as the suite's RGB conv + one conv per
    mask input. Stage-0 files have no `others` channel: eval_davis.py appends zeros."""
    prefix = "encoders.value_encoder."
    if weight.dim() != 4 or weight.shape[1] not in (4, 5):
        raise ConversionError(
            f"{where}: value_encoder.conv1.weight has shape {list(weight.shape)}; STCN's has 4 "
            "or 5 input channels (RGB, mask, others)"
        )
    others = weight[:, 4:5] if weight.shape[1] == 5 else torch.zeros_like(weight[:, 3:4])
    return {
        prefix + "conv1.weight": weight[:, :3].clone(),
        prefix + "conv1_extra.mask.weight": weight[:, 3:4].clone(),
        prefix + "conv1_extra.others.weight": others.clone(),
    }


def official_state(mode: str, suite: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse map: the suite's network state as the official names of the table (for
    round trips and for saving a suite network in an official layout)."""
    table = official_table(mode)
    tensors = table["tensors"]
    names = [
        n for n, _ in (tensors[RELEASES[mode].section] if isinstance(tensors, dict) else tensors)
    ]
    prefix = table.get("key_prefix") or ""
    out: dict[str, Tensor] = {}
    for prefixed in names:
        name = prefixed[len(prefix) :] if prefix and prefixed.startswith(prefix) else prefixed
        if _ignored(name):
            continue
        if name.endswith(".mean") and name.count(".") == 1:
            out[name] = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        elif name.endswith(".std") and name.count(".") == 1:
            out[name] = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        elif mode == "stcn" and name == "value_encoder.conv1.weight":
            base = "encoders.value_encoder."
            out[name] = torch.cat(
                [
                    suite[base + "conv1.weight"],
                    suite[base + "conv1_extra.mask.weight"],
                    suite[base + "conv1_extra.others.weight"],
                ],
                dim=1,
            )
        else:
            out[name] = suite[suite_name(mode, name)]
    return out


# -- files ----------------------------------------------------------------------------------
def model_config(mode: str) -> dict[str, Any]:
    """The resolved model config of a mode's paper network (``model/size=paper``)."""
    from hydra import compose, initialize_config_dir

    release = RELEASES[mode]
    overrides = [f"model={release.model}", "model/size=paper", *release.overrides]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return OmegaConf.to_container(cfg.model, resolve=True)


def _sections(mode: str, loaded: Any, path: Path) -> tuple[dict, dict | None]:
    release = RELEASES[mode]
    if not isinstance(loaded, Mapping):
        raise ConversionError(f"{path}: not a state dict (a {type(loaded).__name__})")
    if release.section is None:
        if any(isinstance(v, Mapping) for v in loaded.values()):
            raise ConversionError(
                f"{path}: holds sub-dicts {sorted(k for k, v in loaded.items() if isinstance(v, Mapping))}"
                f", not a bare {mode} state dict; is it another mode's file?"
            )
        return dict(loaded), None
    if release.section not in loaded:
        raise ConversionError(
            f"{path}: no {release.section!r} entry; a released {mode} checkpoint holds "
            f"{{{release.section!r}: ..., {release.flow_section!r}: ...}}"
        )
    flow = loaded.get(release.flow_section) if release.flow_section else None
    return dict(loaded[release.section]), None if flow is None else dict(flow)


def convert_file(mode: str, path: str | Path, out: str | Path) -> dict[str, Any]:
    """Convert a released checkpoint; writes a `vos.eval`-ready checkpoint. Returns a summary."""
    if mode not in RELEASES:
        raise ConversionError(f"--from {mode}: choose one of {list(MODES)}")
    path = Path(path)
    loaded = read_checkpoint(path, "IN.pth")
    network_state, flow_state = _sections(mode, loaded, path)
    table = official_table(mode)
    network_state = _strip_prefix(network_state, table.get("key_prefix") or "module.")
    model = model_config(mode)
    if flow_state is None and RELEASES[mode].flow_section:
        model["flow"] = {"_target_": "vos.model.flow.OracleFlow"}  # no flow network in the file
    network = build_network(model)
    target = {
        k: v for k, v in network.state_dict().items() if not k.startswith(FLOW_ESTIMATOR_PREFIX)
    }
    state = convert_state(mode, network_state, target, where=str(path))
    if flow_state is not None:
        flow_target = network.flow_estimator.state_dict()
        flow_state = _strip_prefix(flow_state, "module.")
        renamed = {}
        for name, value in flow_state.items():
            ours = name
            for pattern, replacement in _FLOW_RULES:
                ours = re.sub(pattern, replacement, ours)
            renamed[ours] = value
        missing = sorted(set(flow_target) - set(renamed))
        unknown = sorted(set(renamed) - set(flow_target))
        if missing or unknown:
            raise ConversionError(
                f"{path}: the {RELEASES[mode].flow_section!r} entry is not TinyFlowNet "
                f"(missing {missing[:3]}, unknown {unknown[:3]})"
            )
        state.update({FLOW_ESTIMATOR_PREFIX + k: v for k, v in renamed.items()})
    network.load_state_dict(state, strict=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    checkpoint = {
        "state_dict": {NETWORK_PREFIX + k: v for k, v in network.state_dict().items()},
        "hyper_parameters": {"model": model, "inference": dict(RELEASES[mode].inference)},
        "converted_from": {
            "mode": mode,
            "file": path.name,
            "sha256": digest,
            "repository": table.get("repository"),
            "commit": table.get("commit"),
        },
    }
    write_atomic(out, lambda tmp: torch.save(checkpoint, tmp))
    return {
        "mode": mode,
        "tensors": len(state),
        "parameters": sum(v.numel() for v in state.values()),
        "flow_network": flow_state is not None,
        "out": str(out),
    }
