import json
import sys


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
