"""`make gpu-check`: the kernels' tests and benchmarks on a CUDA GPU, in one time-boxed command.

1. The kernel test modules (memory_read, window_read, gather_read, flex) with
   VOS_TEST_DEVICE=cuda and TRITON_INTERPRET=0: the same tests as on the CPU, on CUDA tensors,
   with the Triton kernels compiled for the GPU and flex_attention's compiled kernel.
2. ``python -m vos.bench ops --roofline`` at the papers' sizes, one case per command (so that
   a case that fails or runs out of time costs only itself): the reference, flex and Triton
   side by side, their ratios, and each time as a fraction of the GPU's roofline.

Results go to ``outputs/gpu_check/<date>_<time>/``: ``tests.log`` and ``tests.xml`` (pytest),
``ops_<dtype>.json`` (the bench's records) and ``summary.md``, rewritten after every case so
that a run cut short keeps what it measured. The tests get ``--tests-budget-s`` seconds, the
benchmarks what is left of ``--budget-s``; whatever a budget cuts is reported as cut, never
filled in. Exits 1 without a CUDA device (one line saying so), or when a test fails, a stage
runs out of time or a case fails.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
KERNEL_TESTS = [
    "tests/test_memory_read_kernel.py",
    "tests/test_window_read.py",
    "tests/test_gather_read.py",
    "tests/test_flex_read.py",
]
# a case is not started with less time left than this (spawning, compiling, autotuning)
MIN_CASE_SECONDS = 30


def run_time_boxed(
    command: list[str], timeout_s: float, log: Path, env: dict, stdout: Path | None = None
) -> tuple[int, bool]:
    """``(exit code, timed out)`` of ``command``, its stderr in ``log`` and its stdout there
    too or in ``stdout``; on timeout its whole process group (compile workers included) is
    killed."""
    with contextlib.ExitStack() as files:
        err = files.enter_context(log.open("w"))
        out = err if stdout is None else files.enter_context(stdout.open("w"))
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=err,
            env=env,
            cwd=REPOSITORY,
            start_new_session=True,
        )
        try:
            return process.wait(timeout=max(1.0, timeout_s)), False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return process.returncode, True


def count_test_outcomes(junit: Path, log: Path) -> dict:
    """passed / failed / skipped counts and the failed tests' ids, from pytest's JUnit XML or,
    when pytest was cut short before writing it, from its verbose log."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "failed_ids": []}
    if junit.exists():
        for case in ElementTree.parse(junit).iter("testcase"):
            test_id = f"{case.get('classname')}::{case.get('name')}"
            if case.find("failure") is not None or case.find("error") is not None:
                counts["failed"] += 1
                counts["failed_ids"].append(test_id)
            elif case.find("skipped") is not None:
                counts["skipped"] += 1
            else:
                counts["passed"] += 1
        return counts
    for line in log.read_text(errors="replace").splitlines():
        if " PASSED" in line:
            counts["passed"] += 1
        elif " FAILED" in line or " ERROR" in line:
            counts["failed"] += 1
            counts["failed_ids"].append(line.split(" ")[0])
        elif " SKIPPED" in line:
            counts["skipped"] += 1
    return counts


def benchmark_cases() -> list[str]:
    """The bench's cases at the papers' sizes, memory_read's first (triton vs flex vs torch)."""
    from vos.bench.ops import cases

    names = [c.name for c in cases(argparse.Namespace(memory_frames=[1, 5, 10], quick=False))]
    return sorted(names, key=lambda name: not name.startswith("memory_read/"))


def _number(value, digits=2) -> str:
    return "" if value is None or value != value else f"{value:.{digits}f}"


def summary_markdown(header: dict, tests: dict, results: dict) -> str:
    lines = [
        f"# gpu-check, {header['date']}",
        "",
        f"GPU: {header['gpu']} (roofline entry: {header['roofline_gpu'] or 'none'}); "
        f"torch {header['torch']}, triton {header['triton']}; commit {header['commit']}.",
        "",
        f"## Kernel tests on the GPU ({tests.get('seconds', 0):.0f} s)",
        "",
        f"{tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
        f"{tests.get('skipped', 0)} skipped"
        + (" — cut by the time budget" if tests.get("timed_out") else "."),
    ]
    lines += [f"- failed: `{test_id}`" for test_id in tests.get("failed_ids", [])]
    for dtype, outcome in results.items():
        records = outcome["records"]
        lines += [
            "",
            f"## `vos.bench ops --roofline --dtype {dtype}`",
            "",
            "| case | backend | ms | ideal µs on this GPU | of roofline | GFLOP/s | peak MB | error |",
            "|---|---|---|---|---|---|---|---|",
        ]
        key = f"ideal_us_{header['roofline_gpu']}" if header["roofline_gpu"] else None
        for record in records:
            backend = record.get("setting", {}).get("backend")
            if record["name"].startswith(("speedup/", "memory/", "machine/")) or backend is None:
                continue
            lines.append(
                f"| `{record['name']}` | {backend} | {_number(record.get('ms'), 3)} | "
                f"{_number(record.get(key)) if key else ''} | "
                f"{_number(record.get('roofline_fraction'), 3)} | "
                f"{_number(record.get('gflops_per_s'), 0)} | {_number(record.get('peak_mb'), 0)} | "
                f"{record.get('error', '')} |"
            )
        speedups = [
            r for r in records if r["name"].count("/") == 3 and r["name"].startswith("speedup/")
        ]
        if speedups:
            lines += ["", "| case | faster | than | speed-up |", "|---|---|---|---|"]
            for record in speedups:
                case = record["name"].removeprefix("speedup/").rsplit("/", 1)[0]
                lines.append(
                    f"| `{case}` | {record['setting']['backend']} | "
                    f"{record['setting']['baseline']} | {record['speedup']:.2f}× |"
                )
        for name, reason in outcome["not_run"]:
            lines.append(f"- `{name}`: {reason}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPOSITORY / "outputs" / "gpu_check")
    parser.add_argument("--budget-s", type=float, default=570, help="the whole command")
    parser.add_argument("--tests-budget-s", type=float, default=300, help="the kernel tests")
    parser.add_argument(
        "--dtypes", nargs="+", default=["fp32"], choices=["fp32", "tf32", "fp16", "bf16"]
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--skip-tests", action="store_true")
    args = parser.parse_args(argv)
    started = time.monotonic()

    import torch

    if not torch.cuda.is_available():
        print(
            "gpu-check: no CUDA device is present (torch.cuda.is_available() is False); "
            "run it on a machine with an NVIDIA GPU",
            file=sys.stderr,
        )
        return 1
    import triton

    from vos.bench.roofline import gpu_key

    gpu_name = torch.cuda.get_device_name()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True
    ).stdout.strip()
    header = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "gpu": gpu_name,
        "roofline_gpu": gpu_key(gpu_name),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "commit": commit or "unknown",
    }
    out = args.out / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "VOS_TEST_DEVICE": "cuda",
        "TRITON_INTERPRET": "0",
        "WANDB_MODE": "disabled",
    }
    tests: dict = {}
    results: dict = {}

    def write_summary() -> None:
        (out / "summary.md").write_text(summary_markdown(header, tests, results))

    if not args.skip_tests:
        print(f"gpu-check: kernel tests on {gpu_name} (at most {args.tests_budget_s:.0f} s)")
        junit, log = out / "tests.xml", out / "tests.log"
        command = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider"]
        command += [f"--junitxml={junit}", *KERNEL_TESTS]
        test_started = time.monotonic()
        code, timed_out = run_time_boxed(command, args.tests_budget_s, log, env)
        tests = count_test_outcomes(junit, log)
        tests.update(seconds=time.monotonic() - test_started, timed_out=timed_out, exit_code=code)
        print(
            f"gpu-check: {tests['passed']} passed, {tests['failed']} failed, "
            f"{tests['skipped']} skipped in {tests['seconds']:.0f} s"
            + (" (cut by the time budget)" if timed_out else "")
        )
        write_summary()

    failed_cases = 0
    for dtype in args.dtypes:
        outcome = results.setdefault(dtype, {"records": [], "not_run": []})
        for name in benchmark_cases():
            left = args.budget_s - (time.monotonic() - started)
            if left < MIN_CASE_SECONDS:
                outcome["not_run"].append((name, "not run: the time budget was spent"))
                continue
            print(f"gpu-check: vos.bench ops {name} ({dtype}, {left:.0f} s left)")
            stem = out / f"bench_{dtype}_{name.replace('/', '_')}"
            command = [sys.executable, "-m", "vos.bench", "ops", "--json", "--roofline"]
            command += ["--dtype", dtype, "--repeats", str(args.repeats), "--cases", name]
            log, printed = stem.with_suffix(".log"), stem.with_suffix(".json")
            code, timed_out = run_time_boxed(command, left, log, env, stdout=printed)
            if code != 0 or timed_out:
                failed_cases += 1
                last = (log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
                reason = "cut by the time budget" if timed_out else last
                outcome["not_run"].append((name, f"failed: {reason}"))
            else:
                records = json.loads(printed.read_text())
                failed_cases += sum("error" in r for r in records)
                outcome["records"] += records
            (out / f"ops_{dtype}.json").write_text(json.dumps(outcome["records"], indent=2))
            write_summary()

    write_summary()
    print(f"gpu-check: results in {out}")
    cut = any(outcome["not_run"] for outcome in results.values())
    return 1 if tests.get("failed") or tests.get("timed_out") or failed_cases or cut else 0


if __name__ == "__main__":
    sys.exit(main())
