"""`python -m vos.convert`: the released checkpoints' parameter tables map strictly onto the
suite's networks, round trip, and a wrong file is refused with the tensor named."""

from __future__ import annotations

import functools

import pytest
import torch

from vos.inference.loading import load_engine
from vos.model.network import FLOW_ESTIMATOR_PREFIX, build_network
from vos.model.official.convert import (
    MODES,
    RELEASES,
    ConversionError,
    convert_state,
    model_config,
    official_state,
    official_table,
)


def released_tensors(mode: str, section: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict with the table's names and shapes, random values (normalisation buffers as
    the official encoders register them)."""
    tensors = official_table(mode)["tensors"]
    entries = tensors[section or RELEASES[mode].section] if isinstance(tensors, dict) else tensors
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in entries:
        if name.endswith(("Encoder_M.mean", "Encoder_Q.mean")):
            state[name] = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        elif name.endswith(("Encoder_M.std", "Encoder_Q.std")):
            state[name] = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        elif name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7)
        else:
            state[name] = torch.randn(shape, generator=g)
    return state


@functools.cache
def suite_target(mode: str) -> dict[str, torch.Tensor]:
    network = build_network(model_config(mode))
    return {
        k: v for k, v in network.state_dict().items() if not k.startswith(FLOW_ESTIMATOR_PREFIX)
    }


def strip(state: dict, mode: str) -> dict:
    prefix = official_table(mode).get("key_prefix") or ""
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


@pytest.mark.parametrize("mode", MODES)
def test_every_released_tensor_fills_the_paper_network_and_round_trips(mode):
    official = strip(released_tensors(mode), mode)
    target = suite_target(mode)
    converted = convert_state(mode, official, target)
    # every parameter and buffer filled, with the official values
    assert set(converted) | {k for k in target if k.endswith("num_batches_tracked")} >= set(target)
    back = official_state(mode, converted)
    for name, value in official.items():
        if name.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(back[name], value, rtol=0, atol=0, msg=name)


def test_conversion_names_the_first_tensor_that_does_not_fit():
    stm = strip(released_tensors("stm"), "stm")
    with pytest.raises(ConversionError, match="'Encoder_M.conv1_m.weight' has no place"):
        convert_state("stcn", stm, suite_target("stcn"))
    wrong_width = dict(stm)
    wrong_width["KV_M_r4.Key.weight"] = torch.zeros(64, 1024, 3, 3)
    with pytest.raises(
        ConversionError, match=r"KV_M_r4.Key.weight.*\[64, 1024, 3, 3\].*memory_key"
    ):
        convert_state("stm", wrong_width, suite_target("stm"))
    incomplete = {k: v for k, v in stm.items() if not k.startswith("Decoder.RF2.")}
    with pytest.raises(ConversionError, match="nothing fills the suite's 'decoder.RF2"):
        convert_state("stm", incomplete, suite_target("stm"))
    not_imagenet = dict(stm)
    not_imagenet["Encoder_Q.mean"] = torch.zeros(1, 3, 1, 1)
    with pytest.raises(ConversionError, match="Encoder_Q.mean.*ImageNet"):
        convert_state("stm", not_imagenet, suite_target("stm"))


def test_stcn_single_object_value_conv_gets_an_empty_others_channel():
    stcn = strip(released_tensors("stcn"), "stcn")
    stcn["value_encoder.conv1.weight"] = stcn["value_encoder.conv1.weight"][:, :4]
    converted = convert_state("stcn", stcn, suite_target("stcn"))
    assert torch.all(converted["encoders.value_encoder.conv1_extra.others.weight"] == 0)


def test_converted_checkpoint_runs_the_official_protocol(tmp_path, run_command):
    path = tmp_path / "STM_weights.pth"
    torch.save(released_tensors("stm"), path)
    out = tmp_path / "stm.ckpt"
    result = run_command("vos.convert", "--from", "stm", path, "--out", out)
    assert result.returncode == 0, result.stderr
    engine = load_engine(out, torch.device("cpu"))
    assert engine.network.arch == "stm"
    assert (engine.policy.mem_every, engine.policy.include_previous) == (5, True)
    assert engine.policy.max_memory_frames is None
    value = engine.network.state_dict()["encoders.memory_key.res4.weight"]
    torch.testing.assert_close(value, strip(released_tensors("stm"), "stm")["KV_M_r4.Key.weight"])
    again = run_command("vos.convert", "--from", "stm", path, "--out", out)
    assert again.returncode != 0 and "--overwrite" in again.stderr
    wrong = run_command("vos.convert", "--from", "rmnet", path, "--out", f"{out}2")
    assert wrong.returncode != 0 and "no 'rmnet' entry" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1


def test_converted_hmmn_reads_memory_as_the_released_code():
    """The released Memory's σ rule and its double tracking step, window 7, top-k 32."""
    reader = build_network(model_config("hmmn")).reader
    assert (reader.sigma_rule, reader.track_rule) == ("official", "official")
    assert (reader.window, reader.top_k, reader.fine_memory) == (7, 32, "first_previous")
