"""``python -m vos.bench kernels``: the Triton kernels compiled for sm_80 / sm_90 without a GPU.

The compiles run in worker processes with the interpreter off, whatever this process uses.
"""

import json
import sys

import pytest

from vos.bench import kernels

PTXAS_LOG = """\
ptxas info    : 11 bytes gmem
ptxas info    : Compiling entry function '_memory_read_forward_kernel' for 'sm_90a'
ptxas info    : Function properties for _memory_read_forward_kernel
    1416 bytes stack frame, 2092 bytes spill stores, 1728 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 1416 bytes cumulative stack size
"""

PTX = """\
\t@%p1 cp.async.cg.shared.global [ %r1 + 0 ], [ %rd1 + 0 ], 0x10, %r2;
\tcp.async.ca.shared.global [ %r3 + 0 ], [ %rd2 + 0 ], 0x4;
\tcp.async.commit_group;
\tcp.async.wait_group 0x1;
\tcp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r4], [%rd3, {%r5, %r6}], [%r7];
\tcp.async.bulk.commit_group;
\tcp.async.bulk.wait_group.read 0;
\tmma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 { %f1, %f2, %f3, %f4 }, { %r8 }, { %r9 }, { %f5 };
\twgmma.fence.sync.aligned;
\twgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 {%f6}, %rd4, %rd5, %p2, 1, 1, 0, 1;
\twgmma.commit_group.sync.aligned;
\tfma.rn.f32 %f7, %f8, %f9, %f10;
\t@!%p3 fma.rn.f32 %f11, %f12, %f13, %f14;
\tfma.rn.ftz.f32 %f15, %f16, %f17, %f18;
"""


def test_ptxas_log_and_ptx_are_read():
    assert kernels.parse_ptxas_log(PTXAS_LOG) == {
        "regs": 255,
        "stack_bytes": 1416,
        "spill_store_bytes": 2092,
        "spill_load_bytes": 1728,
    }
    assert kernels.parse_ptxas_log("") == dict.fromkeys(kernels.parse_ptxas_log(PTXAS_LOG))
    # copies and MMAs, not their commit / wait / fence companions; predicated ones count
    assert kernels.count_ptx(PTX) == {"cp_async": 2, "bulk": 1, "mma": 1, "wgmma": 1, "fma": 2}


def test_dot_precisions_read_the_triton_ir():
    ir = """
    %c = tt.dot %a, %b, %acc, inputPrecision = tf32 : tensor<32x32xf32> * tensor<32x32xf32> -> tensor<32x32xf32>
    %d = tt.dot %a, %b, %acc : tensor<32x32xf32> * tensor<32x32xf32> -> tensor<32x32xf32>
    %e = tt.dot_scaled %a scale %s, %b scale %t, %acc lhs = e2m1 rhs = e2m1
    """
    assert kernels.dot_precisions(ir) == ["tf32", "ieee"]


def test_every_kernel_of_vos_kernels_is_a_case():
    """A new Triton kernel in vos.kernels gets a case here, or this fails."""
    import ast
    from pathlib import Path

    import vos.kernels

    root = Path(vos.kernels.__file__).parent
    autotuned = set()
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                "autotune" in ast.unparse(d) for d in node.decorator_list
            ):
                autotuned.add(node.name)
            if isinstance(node, ast.Call) and "autotune" in ast.unparse(node.func):
                for argument in ast.walk(node):
                    if isinstance(argument, ast.Name) and argument.id.endswith("_kernel"):
                        autotuned.add(argument.id)
    covered = {
        "_memory_read_forward_kernel",
        "_memory_read_backward_memory_kernel",
        "_memory_read_backward_query_kernel",
        "_window_read_fwd_kernel",
        "_window_read_bwd_dq_kernel",
        "_window_read_bwd_memory_kernel",
        "_gather_read_fwd_kernel",
        "_gather_read_bwd_kernel",
        "_gather_read_grouped_fwd_kernel",
        "_gather_read_grouped_bwd_kernel",
        "_gather_read_bwd_memory_kernel",
        "_memory_top_kernel",
    }
    assert autotuned == covered
    assert len(kernels.CASES) == 22


def _bench(run_python_m, *args: str) -> list[dict]:
    result = run_python_m(
        [sys.executable, "-m", "vos.bench", "kernels", "--json", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_memory_read_compiles_for_sm90_and_a_bad_variant_is_reported(run_python_m):
    # the first config, fp16 and TF32, on sm_90 (sm_80 and every config: the slow tests)
    records = _bench(
        run_python_m,
        "--kernels", "memory_read.fwd",
        "--target", "sm_90", "sm_10",
        "--dtypes", "fp16", "fp32-tf32",
        "--max-configs", "1",
    )  # fmt: skip
    by_variant = {(r["setting"]["target"], r["setting"]["dtype"]): r for r in records}
    assert len(records) == len(by_variant) == 4
    for dtype in ("fp16", "fp32-tf32"):
        record = by_variant[("sm_90", dtype)]
        assert record["name"] == "memory_read.fwd"
        assert record["setting"]["config"] == "M128 N32 CV128 w8 s2"
        # the tensor-core configs; the FMA ones (IEEE fp32) are pruned away
        assert record["setting"]["Ck"] == 128 and record["setting"]["tuner_configs"] == "7/9"
        assert record["status"] == "ok", record
        assert 0 < record["regs"] <= 255 and record["shared_bytes"] > 0
        assert record["spill_store_bytes"] == 0, record  # no spills at the papers' sizes
        assert record["dots"] == 2  # QKᵀ and P·V
        # the branch-free loop over padded rows is software-pipelined: async copies
        assert record["cp_async"] > 0, record
        # sm_90's warp-group MMA: fp16 tiles, and fp32 ones when TF32 is allowed
        assert record["wgmma"] > 0 and record["mma"] == 0, record
    assert by_variant[("sm_90", "fp32-tf32")]["tf32_dots"] == 2
    # a target the compiler cannot handle fails alone, with its error, and the run goes on
    failed = by_variant[("sm_10", "fp16")]
    assert failed["status"] == "error" and failed["error"]
    assert failed["setting"]["config"] == "M128 N32 CV128 w8 s2"


def test_window_read_compiles_for_sm90_pipelined_without_spills(run_python_m):
    # LMRC's local read with the comparator's top-5, forward and dK (the heaviest backward
    # pass), first config, fp16 (all configs on both targets: the slow test below)
    records = _bench(
        run_python_m,
        "--kernels", "window_read.fwd/top5", "window_read.bwd_dk/top5",
        "--target", "sm_90", "--dtypes", "fp16", "--max-configs", "1",
    )  # fmt: skip
    assert {r["name"] for r in records} == {"window_read.fwd/top5", "window_read.bwd_dk/top5"}
    for record in records:
        assert record["status"] == "ok", record
        assert record["setting"]["Ck"] == 64 and record["setting"]["top_k"] == 5
        assert record["spill_store_bytes"] == 0, record
        # pixel-major rows, loops that name their stages: asynchronous copies
        assert record["cp_async"] > 0, record


def test_grouped_gather_read_compiles_to_tensor_core_products(run_python_m):
    # HMMN's res2 read (4×4 pixels share 128 candidates), forward and query-side backward,
    # first config, fp16 and TF32 on sm_90 (all configs on both targets: the slow test below)
    records = _bench(
        run_python_m,
        "--kernels", "gather_read.fwd/grouped16", "gather_read.bwd/grouped16",
        "--target", "sm_90", "--dtypes", "fp16", "fp32-tf32", "--max-configs", "1",
    )  # fmt: skip
    assert len(records) == 4
    for record in records:
        assert record["status"] == "ok", record
        assert record["setting"]["group"] == 16
        assert record["spill_store_bytes"] == 0, record
        # S = Q Kᵀ and P V (backward: dP = dO Vᵀ and dS K) on the tensor cores
        assert record["dots"] == (2 if record["name"].startswith("gather_read.fwd") else 3)
        assert record["mma"] + record["wgmma"] > 0, record
        # the gathered candidate rows are loaded asynchronously (a pipelined dot loop)
        assert record["cp_async"] > 0, record
        if record["setting"]["dtype"] == "fp32-tf32":
            assert record["tf32_dots"] == record["dots"]


def test_an_unknown_target_is_one_line(run_command):
    result = run_command("vos.bench", "kernels", "--target", "gpu")
    assert result.returncode == 1
    assert "gpu" in result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_every_kernel_compiles_for_sm80_with_sane_figures(run_python_m):
    """One config per kernel, fp32 and fp16, with the SASS as a check on the PTX counts."""
    records = _bench(
        run_python_m, "--target", "sm_80", "--dtypes", "fp32", "fp16", "--max-configs", "1",
        "--sass",
    )  # fmt: skip
    assert {r["name"] for r in records} == set(kernels.CASES)
    assert len(records) == 2 * len(kernels.CASES)
    for record in records:
        dtype = record["setting"]["dtype"]
        assert record["status"] == "ok", record
        assert 0 < record["regs"] <= 255, record
        assert record["spill_store_bytes"] >= 0 and record["spill_load_bytes"] >= 0
        assert record["shared_bytes"] >= 0
        assert record["wgmma"] == record["bulk"] == 0  # sm_80 has neither
        sass = record["sass"]
        # the PTX counts agree with the machine code
        assert (record["mma"] > 0) == (sass["HMMA"] > 0), record
        assert (record["cp_async"] > 0) == (sass["LDGSTS"] > 0), record
        assert record["spill_store_bytes"] == 0 or sass["STL"] > 0, record
        if record["dots"] == 0:  # window_read, gather_read: no tl.dot, no tensor cores
            assert record["mma"] == 0
        elif dtype == "fp16":  # memory_read's fp16 tiles go to the tensor cores
            assert record["mma"] > 0, record
        else:  # fp32 with input_precision="ieee": plain FMA
            assert record["tf32_dots"] == 0 and record["mma"] == 0 and record["fma"] > 0


@pytest.mark.slow
def test_memory_read_forward_configs_the_tuner_may_pick_do_not_spill(run_python_m):
    """Every forward config kept for each product path, at the papers' sizes, on both targets:
    no register spills, pipelined loads, tensor cores wherever the dtype allows them."""
    records = _bench(
        run_python_m, "--kernels", "memory_read.fwd", "--target", "sm_80", "sm_90",
        "--dtypes", "fp32", "fp32-tf32", "fp16",
    )  # fmt: skip
    assert len(records) == 2 * (2 + 7 + 7)  # targets × (FMA configs + tensor-core configs × 2)
    for record in records:
        assert record["status"] == "ok", record
        assert record["spill_store_bytes"] == 0, record
        assert record["cp_async"] > 0, record
        tensor_cores = record["mma"] + record["wgmma"]
        assert (tensor_cores > 0) == (record["setting"]["dtype"] != "fp32"), record
        if record["setting"]["target"] == "sm_80":  # mma.sync; wgmma is sm_90's
            assert record["wgmma"] == 0, record


@pytest.mark.slow
def test_window_read_configs_the_tuner_may_pick_do_not_spill(run_python_m):
    """Every window_read kernel × config kept at LMRC's sizes, fp32 and fp16, on both targets:
    no register spills and asynchronous copies in every main loop."""
    records = _bench(
        run_python_m, "--kernels", "window_read", "--target", "sm_80", "sm_90",
        "--dtypes", "fp32", "fp16",
    )  # fmt: skip
    names = {case for case in kernels.CASES if case.startswith("window_read")}
    assert {r["name"] for r in records} == names and len(names) == 7
    for record in records:
        assert record["status"] == "ok", record
        assert record["spill_store_bytes"] == 0, record
        assert record["cp_async"] > 0, record


@pytest.mark.slow
def test_gather_read_configs_the_tuner_may_pick_do_not_spill(run_python_m):
    """Every gather_read kernel × config kept at HMMN's sizes, fp32 and fp16, on both targets:
    no register spills (the configs that spilled are left out of the tuner's list), and the
    grouped kernels' fp16 products on the tensor cores (IEEE fp32 ones run on the FMA units)."""
    records = _bench(
        run_python_m, "--kernels", "gather_read", "--target", "sm_80", "sm_90",
        "--dtypes", "fp32", "fp16",
    )  # fmt: skip
    assert {r["name"] for r in records} == {c for c in kernels.CASES if "gather_read" in c}
    for record in records:
        assert record["status"] == "ok", record
        assert record["spill_store_bytes"] == 0, record
        name = record["name"]
        if name.startswith(("gather_read.fwd/grouped", "gather_read.bwd/grouped")):
            assert record["dots"] > 0, record
            if record["setting"]["dtype"] == "fp16":
                assert record["mma"] + record["wgmma"] > 0, record


@pytest.mark.slow
def test_memory_top_configs_the_tuner_may_pick_do_not_spill(run_python_m):
    """LMRC's global top-25 kernel at its size, every dtype, both targets: no register spills
    in the configs kept (IEEE fp32 leaves out the two that spilled), asynchronous copies, and
    tensor cores for fp16, bf16 and TF32."""
    records = _bench(
        run_python_m, "--kernels", "memory_top", "--target", "sm_80", "sm_90",
        "--dtypes", "fp32", "fp32-tf32", "fp16", "bf16",
    )  # fmt: skip
    assert len(records) == 2 * (2 + 4 * 3)  # targets × (IEEE configs + 4 configs × 3 dtypes)
    for record in records:
        assert record["status"] == "ok", record
        assert record["spill_store_bytes"] == 0, record
        assert record["cp_async"] > 0, record
        tensor_cores = record["mma"] + record["wgmma"]
        assert (tensor_cores > 0) == (record["setting"]["dtype"] != "fp32"), record
