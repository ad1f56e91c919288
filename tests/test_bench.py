import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def test_bench_inference_prints_json_records(run_python_m):
    result = run_python_m(
        [
            sys.executable,
            "-m",
            "vos.bench",
            "inference",
            "--json",
            "--height=32",
            "--width=48",
            "--at",
            "3",
            "8",
            "--window=1",
            "--max-memory-frames=2",
            "--mem-every=2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    names = [r["name"] for r in records]
    assert names == ["inference/frame3", "inference/frame8", "inference/late_vs_early"]
    for record in records:
        assert {"name", "setting", "ms", "peak_mb"} <= record.keys()
        assert record["ms"] > 0
        assert record["setting"]["resolution"] == "32x48"
    # the cap bounds the memory read at frame 8: 2 memory frames + the previous one
    assert records[1]["memory_frames"] <= 3


def test_bench_ops_quick_prints_costs_and_speedups(run_python_m):
    result = run_python_m(
        [
            sys.executable,
            "-m",
            "vos.bench",
            "ops",
            "--json",
            "--quick",
            "--memory-frames",
            "1",
            "--repeats",
            "1",
            "--backends",
            "torch",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    records = {r["name"]: r for r in json.loads(result.stdout)}
    global_read = records["memory_read/global_T1"]
    box_read = records["memory_read/box20_T1"]
    # FLOPs are analytic: ~20% boxes on memory and query leave ~4% of the products
    assert 0.03 < box_read["gflop"] / global_read["gflop"] < 0.05
    assert global_read["setting"]["backend"] == "torch"
    assert "speedup/memory_read/box20_T1_vs_memory_read/global_T1" in records
    assert records["machine/matmul_fp32"]["gflops_per_s"] > 0


def test_bench_readers_times_the_read_alone(run_python_m):
    result = run_python_m(
        [sys.executable, "-m", "vos.bench", "readers", "--json", "--variants", "stm"]
        + ["--model-size", "tiny", "--memory-frames", "2", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(result.stdout)
    assert record["name"] == "reader/stm"
    assert record["setting"]["res4"] == "30x54" and record["setting"]["T"] == 2
    assert record["ms"] > 0


def test_bench_readers_draws_rmnet_boxes_with_the_phi_of_the_size_it_runs(run_python_m):
    # φ depends on model/size (1 res4 cell tiny, 4 paper): the boxes are drawn so that, padded
    # by the φ the timed reader uses, they cover --region-area (they covered 38% at paper size
    # when φ was read at the default size)
    result = run_python_m(
        [sys.executable, "-m", "vos.bench", "readers", "--json"]
        + ["--variants", "rmnet/regional-regional", "--model-size", "paper"]
        + ["--memory-frames", "1", "--repeats", "1", "--region-area", "0.2"]
        + ["--flow-range", "40"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(result.stdout)
    assert record["setting"]["size"] == "paper"
    assert abs(record["setting"]["padded_region_area"] - 0.2) < 0.01, record["setting"]
    assert record["setting"]["flow_range"] == 40.0


def test_bench_readers_flow_spreads_over_the_range_it_is_given():
    from vos.bench.readers import _flow

    flow = _flow(30, 54, 40.0, "cpu")
    assert flow.shape == (1, 2, 30, 54)
    assert flow.amin().item() == -20.0 and flow.amax().item() == 20.0
    assert torch.equal(_flow(30, 54, 0.0, "cpu"), torch.zeros(1, 2, 30, 54))


def test_bench_flow_times_both_networks(run_python_m):
    result = run_python_m(
        [sys.executable, "-m", "vos.bench", "flow", "--json", "--height", "64", "--width", "64"]
        + ["--repeats", "1", "--raft-updates", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert records["flow/tinyflownet"]["ms"] > 0 and records["flow/raft_small"]["ms"] > 0
    assert records["speedup/tinyflownet_vs_raft_small"]["speedup"] > 0


def test_bench_readers_hmmn_fine_read_and_kernel_scaling(run_python_m):
    result = run_python_m(
        [sys.executable, "-m", "vos.bench", "readers", "--json", "--model", "hmmn"]
        + ["--variants", "hmmn", "hmmn/fine-topk", "hmmn/fine-dense", "hmmn/kernel-T2"]
        + ["hmmn/kernel-T10", "kmn/kernel-T2", "kmn/kernel-T10", "--model-size", "tiny"]
        + ["--height", "64", "--width", "96", "--memory-frames", "3", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert records["reader/hmmn"]["ms"] > 0
    topk = records["reader/hmmn/fine-topk"]
    assert topk["baseline"] == "hmmn/fine-dense" and topk["speedup_vs_baseline"] > 0
    assert topk["setting"]["part"] == "fine"
    for kernel in ("hmmn", "kmn"):
        for frames in (2, 10):
            record = records[f"reader/{kernel}/kernel-T{frames}"]
            assert record["setting"]["T"] == frames and record["setting"]["part"] == "kernel"


def test_bench_readers_lcm_and_its_global_part(run_python_m):
    result = run_python_m(
        [sys.executable, "-m", "vos.bench", "readers", "--json", "--variants", "stm", "lcm"]
        + ["lcm/grm-only", "--model-size", "tiny", "--height", "64", "--width", "96"]
        + ["--memory-frames", "2", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert {"reader/stm", "reader/lcm", "reader/lcm/grm-only"} <= records.keys()
    assert records["reader/lcm"]["baseline"] == "stm"
    assert "added_ms_vs_baseline" in records["reader/lcm"]


def test_bench_readers_lmrc_split_into_its_parts(run_python_m):
    lmrc = ["lmrc", "lmrc/gmr-only", "lmrc/gmr-lmr", "lmrc/gmr-lmr-slmr"]
    result = run_python_m(
        [sys.executable, "-m", "vos.bench", "readers", "--json", "--variants", *lmrc]
        + ["--model-size", "tiny", "--height", "64", "--width", "96"]
        + ["--memory-frames", "2", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    records = {r["name"]: r for r in json.loads(result.stdout)}
    # each variant adds one part to its baseline: GMR, + LMR, + SLMR, + the comparator
    gmr = records["reader/lmrc/gmr-only"]["ms"]
    parts = [records[f"reader/{v}"]["added_ms_vs_baseline"] for v in lmrc if v != "lmrc/gmr-only"]
    assert gmr > 0
    assert (
        abs(gmr + sum(parts) - records["reader/lmrc"]["ms"]) < 1e-6 * records["reader/lmrc"]["ms"]
    )


def test_bench_data_times_the_training_loader(run_python_m):
    result = run_python_m(
        [sys.executable, "-m", "vos.bench", "data", "--json", "--workers", "0", "1"]
        + ["--batches", "2", "--batch-size", "2", "--videos", "2", "--frames", "6"]
        + ["--height", "64", "--width", "96", "--crop", "48", "48"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert list(records) == ["data/index", "data/workers0", "data/workers1"]
    assert records["data/index"]["setting"]["videos"] == 2
    for workers in (0, 1):
        record = records[f"data/workers{workers}"]
        assert record["clips_per_s"] > 0 and record["ms"] > 0
        assert record["setting"]["workers"] == workers
        assert record["setting"]["crop"] == "48x48"


def test_bench_train_times_steps_per_precision_and_layout(run_python_m):
    small = ["dataset.height=48", "dataset.width=64", "dataset.train.num_videos=2"]
    small += ["dataset.train.num_frames=8", "model.key_channels=8", "model.value_channels=16"]
    small += ["model.decoder_channels=8", "data.batch_size=1", "data.clip.crop=null"]
    result = run_python_m(
        [sys.executable, "-m", "vos.bench", "train", "--json", "--model", "stm", "rmnet"]
        + ["--precision", "32", "bf16-mixed", "--steps", "1", "--warmup", "1"]
        + ["--overrides", *small],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    cases = [(r["name"], r["setting"]["precision"], r["setting"]["layout"]) for r in records]
    assert cases == [
        (f"train_step/{model}", precision, layout)
        for model in ("stm", "rmnet")
        for precision in ("32", "bf16-mixed")
        for layout in ("contiguous", "channels_last")
    ]
    for record in records:
        assert record["ms"] > 0 and record["steps"] == 1 and record["first_step_ms"] > 0
        assert record["setting"]["crop"] == "whole" and record["setting"]["batch"] == 1
        assert record["cpu_isa"] and record["threads"] >= 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--precision", "fp8"], "--precision=fp8"),
        # the memory is measured over the warm-up steps, so there must be one
        (["--warmup", "0"], "--warmup 0 --steps 8: both must be >= 1"),
    ],
    ids=["unknown-precision", "no-warm-up"],
)
def test_bench_train_refuses_what_it_cannot_time(run_python_m, argv, message):
    result = run_python_m(
        [sys.executable, "-m", "vos.bench", "train", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert message in result.stderr.splitlines()[-1]


def test_roofline_of_a_small_read_by_hand():
    """B=1, Ck=4, Cv=8, N=10, M=6 in fp32: 2·10·6·(4+8) = 1440 FLOPs; the fused kernel reads
    the query keys (4·6), memory keys and values (12·10) and writes the readout (8·6): 192
    elements, 768 bytes; the reference adds its fp32 affinity 10×6 four times: 960 bytes."""
    from vos.bench import roofline
    from vos.bench.ops import Case, _cost, _roofline
    from vos.ops.memory_read import memory_read_cost

    cost = memory_read_cost(1, 4, 8, 10, 6, 4)
    assert cost == {"flops": 1440, "bytes": 768}
    case = Case("memory_read/hand", "memory_read", {"Ck": 4, "Cv": 8})
    fused = _roofline(case, "triton", cost, "fp32", None, None)
    reference = _roofline(case, "torch", cost, "fp32", None, None)
    assert fused["model"] == "fused" and reference["model"] == "materialised"
    assert fused["flop_per_byte"] == 1440 / 768
    assert reference["model_mbytes"] * 2**20 == 768 + 960
    # memory-bound on every GPU: 768 B / 3.35 TB/s on an H100 SXM, / 2.039 TB/s on an A100
    assert math.isclose(fused["ideal_us_h100_sxm"], 768 / 3.35e12 * 1e6)
    assert math.isclose(fused["ideal_us_a100_sxm"], 768 / 2.039e12 * 1e6)
    assert math.isclose(reference["ideal_us_h100_sxm"], 1728 / 3.35e12 * 1e6)
    assert "roofline_fraction" not in fused  # no GPU time, no fraction
    # a compute-bound read: res4, T=1, Ck=128, Cv=512 in bf16: 2·1620²·640 FLOPs over
    # 2·1620·(128 + 640 + 512) bytes = 810 FLOP/byte, past every ridge point
    res4 = _cost(Case("r", "memory_read", {"grid": (30, 54), "T": 1, "Ck": 128, "Cv": 512}), 2)
    assert res4 == {"flops": 3_359_232_000.0, "bytes": 4_147_200.0}
    fields = roofline.roofline_fields(res4["flops"], res4["bytes"], "bf16", 0.02, "h100_sxm")
    assert math.isclose(fields["flop_per_byte"], 810.0)
    assert math.isclose(fields["ideal_us_h100_sxm"], 3_359_232_000 / 989.5e12 * 1e6)  # 3.39 µs
    assert math.isclose(fields["ideal_us_a100_sxm"], 3_359_232_000 / 312e12 * 1e6)  # 10.8 µs
    assert math.isclose(fields["roofline_fraction"], fields["ideal_us_h100_sxm"] / 20.0)
    tf32 = roofline.roofline_fields(res4["flops"], res4["bytes"], "tf32", None, None)
    assert math.isclose(tf32["ideal_us_h100_sxm"], 3_359_232_000 / 494.5e12 * 1e6)
    fp32 = roofline.roofline_fields(res4["flops"], res4["bytes"], "fp32", None, None)
    assert math.isclose(fp32["ideal_us_a100_sxm"], 3_359_232_000 / 19.5e12 * 1e6)


def test_roofline_of_a_small_memory_top_by_hand():
    """B=1, Ck=4, a 2×3 query grid (M=6), T=2 (N=12), k=3 in fp32: 2·12·6·4 = 576 FLOPs; the
    kernel reads the keys (4·18 elements, 288 bytes) and writes 6·3 fp32 values and int64
    indices (216 bytes); the reference adds its fp32 logits 12×6 written and read once by
    topk (576 bytes)."""
    from vos.bench.ops import Case, _cost, _roofline

    case = Case("memory_top/hand", "memory_top", {"grid": (2, 3), "T": 2, "Ck": 4, "Cv": 0, "k": 3})
    cost = _cost(case, 4)
    assert cost == {"flops": 576.0, "bytes": 288.0 + 216.0}
    fused = _roofline(case, "triton", cost, "fp32", None, None)
    reference = _roofline(case, "torch", cost, "fp32", None, None)
    assert fused["model_mbytes"] * 2**20 == 504
    assert reference["model_mbytes"] * 2**20 == 504 + 576


def test_gpu_names_map_to_their_data_sheet_entry():
    from vos.bench.roofline import gpu_key

    assert gpu_key("NVIDIA H100 80GB HBM3") == "h100_sxm"
    assert gpu_key("NVIDIA H100 SXM5 80GB") == "h100_sxm"
    assert gpu_key("NVIDIA H200") == "h200_sxm"
    assert gpu_key("NVIDIA A100-SXM4-80GB") == "a100_sxm"
    for other in ("NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA A100-PCIE-40GB", "Tesla T4"):
        assert gpu_key(other) is None


def test_bench_ops_roofline_and_dtype_on_the_cpu(run_python_m):
    result = run_python_m(
        [sys.executable, "-m", "vos.bench", "ops", "--json", "--quick", "--memory-frames", "1"]
        + ["--repeats", "1", "--backends", "torch", "--dtype", "bf16", "--roofline"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    records = {r["name"]: r for r in json.loads(result.stdout)}
    read = records["memory_read/global_T1"]
    assert read["setting"]["dtype"] == "bf16" and read["setting"]["backend"] == "torch"
    assert read["model"] == "materialised"
    # bf16 elements are 2 bytes; the affinity the reference materialises is fp32 regardless
    assert math.isclose(read["mbytes"] * 2**20, 4_147_200)
    assert math.isclose(read["model_mbytes"] * 2**20, 4_147_200 + 16 * 1620**2)
    assert read["ideal_us_h100_sxm"] > 0 and read["ideal_us_a100_sxm"] > read["ideal_us_h100_sxm"]
    assert "roofline_fraction" not in read  # measured on the CPU: ideal times only
    assert records["machine/matmul_bf16"]["gflops_per_s"] > 0


@pytest.mark.slow
def test_bench_ops_times_flex_beside_the_reference_on_the_cpu(run_python_m):
    """flex_attention compiles its CPU kernel in the warm-up call (~30 s per case)."""
    result = run_python_m(
        [sys.executable, "-m", "vos.bench", "ops", "--json", "--quick", "--memory-frames", "1"]
        + ["--repeats", "1", "--backends", "torch", "flex", "--roofline"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    timed = [r for r in records if r["name"].startswith("memory_read/")]
    flex = [r for r in timed if r["setting"]["backend"] == "flex"]
    assert {r["name"] for r in flex} == {"memory_read/global_T1", "memory_read/box20_T1"}
    assert all(r["ms"] > 0 and r["model"] == "fused" for r in flex)
    names = {r["name"] for r in records}
    assert "speedup/memory_read/global_T1/flex_vs_torch" in names


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_gpu_check_without_a_gpu_says_so_in_one_line():
    result = subprocess.run(
        [sys.executable, "tests/gpu_check.py"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "gpu-check: no CUDA device is present (torch.cuda.is_available() is False); "
        "run it on a machine with an NVIDIA GPU"
    ]


def test_gpu_check_summary_from_bench_records(tmp_path, monkeypatch):
    """The GPU path of `make gpu-check` with the GPU and the commands faked: one bench command
    per case, its records in ops_<dtype>.json and summary.md, a failing case reported and
    turned into a non-zero exit."""
    import gpu_check

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "NVIDIA H100 80GB HBM3")
    commands = []

    def fake_run(command, timeout_s, log, env, stdout=None):
        commands.append(command)
        assert env["VOS_TEST_DEVICE"] == "cuda" and env["TRITON_INTERPRET"] == "0"
        case = command[command.index("--cases") + 1]
        if case == "memory_read/box20_T1":
            log.write_text("vos.bench ops: error: something broke\n")
            return 1, False
        log.write_text("")
        records = [
            {"name": case, "setting": {"backend": backend}, "ms": ms, "peak_mb": 1.0}
            | {"ideal_us_h100_sxm": 100.0, "roofline_fraction": 0.1 / ms, "gflops_per_s": 5.0}
            for backend, ms in (("torch", 4.0), ("triton", 1.0))
        ]
        records.append(
            {
                "name": f"speedup/{case}/triton_vs_torch",
                "setting": {"backend": "triton", "baseline": "torch"},
                "ms": 1.0,
                "peak_mb": 1.0,
                "speedup": 4.0,
            }
        )
        stdout.write_text(json.dumps(records))
        return 0, False

    monkeypatch.setattr(gpu_check, "run_time_boxed", fake_run)
    code = gpu_check.main(["--skip-tests", "--out", str(tmp_path), "--budget-s", "1e6"])
    assert code == 1  # the failing case
    assert [c[c.index("--cases") + 1] for c in commands][:2] == [
        "memory_read/global_T1",
        "memory_read/box20_T1",
    ]
    assert all("--roofline" in c and c[c.index("--dtype") + 1] == "fp32" for c in commands)
    (run_dir,) = tmp_path.iterdir()
    records = json.loads((run_dir / "ops_fp32.json").read_text())
    assert len(records) == 3 * (len(commands) - 1)
    summary = (run_dir / "summary.md").read_text()
    assert "GPU: NVIDIA H100 80GB HBM3 (roofline entry: h100_sxm)" in summary
    assert "| `memory_read/global_T1` | triton | 1.000 | 100.00 | 0.100 | 5 | 1 |  |" in summary
    assert "| `memory_read/global_T1` | triton | torch | 4.00× |" in summary
    assert "- `memory_read/box20_T1`: failed: vos.bench ops: error: something broke" in summary


def test_tests_created_on_a_device_keep_cpu_random_numbers():
    """`make gpu-check`'s device switch for the kernel tests (shown with the meta device):
    factories that name no device make the CPU's numbers, then move them; leaves stay leaves."""
    from helpers import tensors_created_on

    with tensors_created_on(torch.device("meta")):
        drawn = torch.randn(3, generator=torch.Generator().manual_seed(0))
        leaf = torch.zeros(2, requires_grad=True)
        kept = torch.ones(2, device="cpu")
        mask = torch.tensor([True, False])
    assert drawn.device.type == "meta" and mask.device.type == "meta"
    assert leaf.device.type == "meta" and leaf.is_leaf and leaf.requires_grad
    assert kept.device.type == "cpu"
    with tensors_created_on(torch.device("cpu")):
        same = torch.randn(3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, torch.randn(3, generator=torch.Generator().manual_seed(0)))
