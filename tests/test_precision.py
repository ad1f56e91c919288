"""The inference precision switch, ``precision=32|16-mixed|bf16-mixed``, of ``vos.eval`` and
``vos.bench inference --precision``: it reaches the network, is recorded, and a value that is
not one of those is refused with the key named."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from helpers import TINY, compose_config, tiny_checkpoint

from vos.data.synthetic import SyntheticSource
from vos.inference.engine import InferenceEngine
from vos.model.network import build_network

ONE_SMALL_VIDEO = [
    "dataset.height=48",
    "dataset.width=64",
    "dataset.eval.num_videos=1",
    "dataset.eval.num_frames=30",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("run"))


@pytest.fixture
def conv_output_dtypes(monkeypatch):
    """The dtypes of every ``nn.Conv2d`` output computed while the test runs."""
    seen: set[torch.dtype] = set()
    convolve = torch.nn.Conv2d.forward

    def recorded(self, x):
        output = convolve(self, x)
        seen.add(output.dtype)
        return output

    monkeypatch.setattr(torch.nn.Conv2d, "forward", recorded)
    return seen


def _global_results(folder):
    with open(folder / "global_results.csv") as f:
        return next(csv.DictReader(f))


def _tiny_network():
    return build_network(compose_config("train", TINY).model).eval()


@pytest.mark.parametrize(
    ("precision", "conv_dtype"),
    [
        ("32", torch.float32),
        ("bf16-mixed", torch.bfloat16),
        ("16-mixed", torch.float16),  # this torch autocasts fp16 on the CPU
    ],
)
def test_engine_runs_the_network_at_the_chosen_precision(conv_output_dtypes, precision, conv_dtype):
    source = SyntheticSource("train", 1, 6, seed=0, height=32, width=48)
    probs_dtypes = set()
    engine = InferenceEngine(_tiny_network(), precision=precision)
    engine.run_video(
        source, source.videos()[0], on_probs=lambda t, probs: probs_dtypes.add(probs.dtype)
    )
    assert conv_output_dtypes == {conv_dtype}
    assert probs_dtypes == {torch.float32}  # what is memorised and compared stays fp32


def test_bf16_mixed_eval_runs_end_to_end_and_records_its_precision(
    checkpoint, tmp_path, run_command, conv_output_dtypes
):
    out = tmp_path / "pred"
    result = run_command(
        "vos.eval",
        f"ckpt_path={checkpoint}",
        *ONE_SMALL_VIDEO,
        f"output_dir={out}",
        "precision=bf16-mixed",
    )
    assert result.returncode == 0, result.stderr
    assert conv_output_dtypes == {torch.bfloat16}
    assert len(list((out / "syn_val_0000").glob("*.png"))) == 30
    assert 0.0 <= float(_global_results(out)["J&F-Mean"]) <= 1.0
    # the log says which precision made these numbers, before segmenting and in the results
    assert "precision=bf16-mixed: the network under cpu autocast to bfloat16" in result.stdout
    assert "Global results for val at precision=bf16-mixed " in result.stdout


def test_settings_stored_in_the_checkpoint_do_not_choose_the_precision(
    checkpoint, tmp_path, run_command, conv_output_dtypes
):
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state["hyper_parameters"]["inference"]["precision"] = "bf16-mixed"
    state["hyper_parameters"]["trainer"] = {"precision": "bf16-mixed"}
    stored = tmp_path / "bf16.ckpt"
    torch.save(state, stored)
    out = tmp_path / "pred"
    result = run_command("vos.eval", f"ckpt_path={stored}", *ONE_SMALL_VIDEO, f"output_dir={out}")
    assert result.returncode == 0, result.stderr
    assert conv_output_dtypes == {torch.float32}
    assert "precision=32: fp32 throughout" in result.stdout
    assert "Global results for val at precision=32 " in result.stdout


@pytest.mark.parametrize("value", ["fp16", "16", "bf16", "true"])
def test_eval_refuses_an_unknown_precision_naming_the_key(checkpoint, tmp_path, run_command, value):
    out = tmp_path / "pred"
    result = run_command(
        "vos.eval",
        f"ckpt_path={checkpoint}",
        *ONE_SMALL_VIDEO,
        f"output_dir={out}",
        f"precision={value}",
    )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert "precision=" in last_line and "bf16-mixed" in last_line, last_line
    assert not out.exists()  # refused before segmenting anything


def test_engine_refuses_an_unknown_precision_naming_the_key():
    with pytest.raises(ValueError, match=r"precision=bf16: expected one of 32, 16-mixed"):
        InferenceEngine(_tiny_network(), precision="bf16")


def test_a_mode_torch_cannot_autocast_is_refused_not_run_in_fp32(monkeypatch):
    """Where torch cannot autocast to the dtype on the device, torch.autocast warns and runs
    fp32; the engine says so instead, naming the key and value."""
    network = _tiny_network()
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda *args: False)
    with pytest.raises(ValueError, match=r"precision=16-mixed: torch .* cannot autocast"):
        InferenceEngine(network, precision="16-mixed")
    InferenceEngine(network, precision="32")  # fp32 needs no autocast


def test_the_engine_keeps_its_precision_when_its_memory_policy_changes():
    engine = InferenceEngine(_tiny_network(), precision="bf16-mixed")
    assert engine.with_policy(mem_every=2).precision == "bf16-mixed"


BENCH_ARGS = [
    "inference",
    "--json",
    "--height=32",
    "--width=48",
    "--at",
    "3",
    "--window=1",
    "--max-memory-frames=2",
]


def test_bench_inference_measures_the_chosen_precision(run_command, conv_output_dtypes):
    result = run_command("vos.bench", *BENCH_ARGS, "--precision", "bf16-mixed")
    assert result.returncode == 0, result.stderr
    assert conv_output_dtypes == {torch.bfloat16}
    records = json.loads(result.stdout)
    assert {record["setting"]["precision"] for record in records} == {"bf16-mixed"}


def test_bench_inference_refuses_an_unknown_precision(run_command):
    result = run_command("vos.bench", *BENCH_ARGS, "--precision", "fp16")
    assert result.returncode == 2
    assert "--precision" in result.stderr and "bf16-mixed" in result.stderr


def test_bf16_on_a_cpu_without_usable_amx_gets_a_note(monkeypatch, capsys):
    """bf16 convolutions without AMX tiles run slower than fp32 ones (docs/benchmarks.md):
    vos.train and vos.eval say so; oneDNN capped below AMX counts as without."""
    from vos.inference.precision import cpu_has_usable_amx, slow_cpu_bf16_note
    from vos.lightning.training import _note_slow_cpu_bf16

    cpu = torch.device("cpu")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    note = slow_cpu_bf16_note("bf16-mixed", cpu, key="trainer.precision")
    assert note and note.startswith("trainer.precision=bf16-mixed on a CPU without AMX tiles")
    assert "trainer.precision=32" in note
    assert slow_cpu_bf16_note("32", cpu) is None
    assert slow_cpu_bf16_note("16-mixed", cpu) is None
    assert slow_cpu_bf16_note("bf16-mixed", torch.device("cuda")) is None
    _note_slow_cpu_bf16({"accelerator": "cpu", "precision": "bf16-mixed"})
    assert capsys.readouterr().out.startswith("vos.train: trainer.precision=bf16-mixed")
    _note_slow_cpu_bf16({"accelerator": "cpu", "precision": "32"})
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    for cap in ("ALL", "AVX512_CORE_AMX"):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert cpu_has_usable_amx() and slow_cpu_bf16_note("bf16-mixed", cpu) is None
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert cpu_has_usable_amx()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert slow_cpu_bf16_note("bf16-mixed", cpu) is not None
