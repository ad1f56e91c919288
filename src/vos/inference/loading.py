"""An inference engine from a `vos.train` checkpoint: the network rebuilt from the model config
stored in it, its weights, and its inference settings (each overridable)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf

from vos.checkpoint import CheckpointError, read_checkpoint
from vos.inference.engine import InferenceEngine
from vos.model.network import FLOW_ESTIMATOR_PREFIX, build_network

NETWORK_PREFIX = "network."  # the LightningModule's attribute holding the network


def check_model_overrides(stored: Mapping, overrides: Mapping, prefix: str = "model") -> None:
    """Only keys the stored model config has can be overridden (a typo must not pass
    silently), apart from ``model.flow``, which is replaced whole (``+model/flow=NAME``)."""
    for key, value in overrides.items():
        path = f"{prefix}.{key}"
        if path == "model.flow":
            continue
        if key not in stored:
            raise ValueError(
                f"{path} is not in the checkpoint's model config; its keys there are "
                f"{sorted(stored)}"
            )
        if isinstance(value, Mapping):
            if not isinstance(stored[key], Mapping):
                raise ValueError(f"{path} is a value in the checkpoint's model config, not a group")
            check_model_overrides(stored[key], value, path)


# what a checkpoint's model config may build: the suite's own classes and functions
TRUSTED_TARGETS = ("vos.",)


def untrusted_target(config: object, trusted: Sequence[str], where: str = "model") -> str | None:
    """The first ``_target_`` in ``config`` outside the ``trusted`` prefixes, with its key."""
    if isinstance(config, Mapping):
        target = config.get("_target_")
        if target is not None and not str(target).startswith(tuple(trusted)):
            return f"{where}._target_={target}"
        for key, value in config.items():
            found = untrusted_target(value, trusted, f"{where}.{key}")
            if found:
                return found
    elif isinstance(config, (list, tuple)):
        for index, value in enumerate(config):
            found = untrusted_target(value, trusted, f"{where}[{index}]")
            if found:
                return found
    return None


def load_engine(
    ckpt_path: str | Path,
    device: torch.device,
    overrides: Mapping | None = None,
    model_overrides: Mapping | None = None,
    trusted_targets: Sequence[str] = (),
    precision: str | int = "32",
) -> InferenceEngine:
    """The inference engine of a trained checkpoint, with inference settings (``overrides``;
    None values keep the stored ones) and model config keys (``model_overrides``, nested)
    overridden. The model config only builds classes inside ``vos.`` (and the
    ``trusted_targets`` prefixes): a checkpoint cannot make this call run anything else.
    ``precision`` is the caller's alone (`vos.inference.precision`): the precision the
    checkpoint was trained with is never read."""
    path = Path(ckpt_path)
    checkpoint = read_checkpoint(path, "ckpt_path")
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams or "model" not in hparams or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path} is not a vos training checkpoint (no model config stored in it)"
        )
    stored_model = OmegaConf.to_container(OmegaConf.create(hparams["model"]))
    model_overrides = dict(model_overrides or {})
    check_model_overrides(stored_model, model_overrides)
    flow_override = model_overrides.pop("flow", None)
    model = OmegaConf.to_container(OmegaConf.merge(stored_model, model_overrides))
    if flow_override is not None:  # a flow source is chosen whole, not merged into the stored one
        model["flow"] = dict(flow_override)
    # the checkpoint holds the trained weights: the backbone files it started from are not needed
    model["backbone"] = {**model["backbone"], "weights": None}
    model["value_backbone"] = {**model["value_backbone"], "weights": None}
    state = {
        key[len(NETWORK_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(NETWORK_PREFIX)
    }
    if flow_override is not None:
        # the flow network comes from model.flow.weights, not from the checkpoint
        state = {k: v for k, v in state.items() if not k.startswith(FLOW_ESTIMATOR_PREFIX)}
    untrusted = untrusted_target(model, (*TRUSTED_TARGETS, *trusted_targets))
    if untrusted:
        raise CheckpointError(
            f"{path}: its model config names {untrusted}, outside the vos package; refusing to "
            "build it (trusted_targets=[...] allows a prefix you trust)"
        )
    network = build_network(model)
    missing, unexpected = network.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(FLOW_ESTIMATOR_PREFIX)]
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the model config (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}): a model override may change the network's weights"
        )
    settings = dict(hparams.get("inference") or {})
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    settings["precision"] = precision  # the caller's, never one stored in the checkpoint
    return InferenceEngine(network.to(device).eval(), **settings)
