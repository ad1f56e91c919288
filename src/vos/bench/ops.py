"""Memory-read ops at the papers' sizes: time, peak memory, FLOPs, bytes, matmul fraction.

480p input gives 30×54 at res4, 60×108 at res3 and 120×216 at res2. Each case runs in a fresh
process so that its peak memory (resident set on the CPU, the allocator's peak on a GPU) is
its own; ``ms`` is the median over ``--repeats`` calls after one warm-up call. The achieved
throughput is divided by this machine's measured fp32 matmul throughput.

Cases (the comparisons issue figures are read from):
- ``memory_read/global`` vs ``memory_read/box20``: T = 1, 5, 10 res4 memory frames; boxes of
  20% of the frame area on memory and query (RMNet's measured mean);
- ``window_read/res2`` (r = 2) vs one dense res2 affinity: peak memory growth;
- ``gather_read/res2`` (K = 128, first + previous frame) vs ``memory_read/res2_dense``;
- ``gather_read/res3_grouped`` (g = 4, K = 128) vs ``memory_read/res3_dense``.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass

import torch

from vos.bench.common import Record
from vos.profiling import time_calls

RES4, RES3, RES2 = (30, 54), (60, 108), (120, 216)


@dataclass(frozen=True)
class Case:
    name: str
    op: str  # memory_read | window_read | gather_read
    setting: dict


def _box_size(hw: tuple[int, int], area: float) -> tuple[int, int]:
    side = area**0.5
    return max(1, round(hw[0] * side)), max(1, round(hw[1] * side))


def _box_mask(frames: int, hw: tuple[int, int], area: float, device) -> torch.Tensor:
    """[1, frames·H·W] bool: a centred box of about ``area`` of each frame."""
    height, width = hw
    bh, bw = _box_size(hw, area)
    y0, x0 = (height - bh) // 2, (width - bw) // 2
    mask = torch.zeros(frames, height, width, dtype=torch.bool, device=device)
    mask[:, y0 : y0 + bh, x0 : x0 + bw] = True
    return mask.view(1, -1)


def _inputs(case: Case, device: torch.device, dtype: torch.dtype):
    s = case.setting
    g = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)

    if case.op == "memory_read":
        hw, frames = tuple(s["grid"]), s["T"]
        m, n = hw[0] * hw[1], frames * hw[0] * hw[1]
        args = (randn(1, s["Ck"], m), randn(1, s["Ck"], n), randn(1, s["Cv"], n))
        kwargs = {}
        if s.get("box_area"):
            kwargs["memory_mask"] = _box_mask(frames, hw, s["box_area"], device)
            kwargs["query_mask"] = _box_mask(1, hw, s["box_area"], device)
        return args, kwargs
    if case.op == "window_read":
        hw = tuple(s["grid"])
        args = (randn(1, s["Ck"], *hw), randn(1, s["Ck"], *hw), randn(1, s["Cv"], *hw))
        return args, {"radius": s["radius"]}
    if case.op == "gather_read":
        hw, frames, k, group = tuple(s["grid"]), s["T"], s["K"], s.get("group", 1)
        m, n = hw[0] * hw[1], frames * hw[0] * hw[1]
        index = torch.randint(0, n, (1, m // group, k), generator=g).to(device)
        query = randn(1, s["Ck"], m) if group == 1 else randn(1, s["Ck"], m // group, group)
        return (query, randn(1, s["Ck"], n), randn(1, s["Cv"], n), index), {}
    raise ValueError(case.op)


def _cost(case: Case, dtype_bytes: int) -> dict:
    from vos.ops.gather_read import gather_read_cost
    from vos.ops.memory_read import memory_read_cost
    from vos.ops.window_read import window_read_cost

    s = case.setting
    hw = s["grid"]
    m = hw[0] * hw[1]
    if case.op == "memory_read":
        fraction = 1.0
        if s.get("box_area"):
            bh, bw = _box_size(hw, s["box_area"])
            fraction = bh * bw / m  # the box's true share of the grid
        return memory_read_cost(1, s["Ck"], s["Cv"], s["T"] * m, m, dtype_bytes, fraction, fraction)
    if case.op == "window_read":
        return window_read_cost(1, s["Ck"], s["Cv"], hw[0], hw[1], s["radius"], dtype_bytes)
    return gather_read_cost(1, s["Ck"], s["Cv"], m, s["K"], s.get("group", 1), dtype_bytes)


def _run_case(case: Case, backend: str, device_name: str, repeats: int, queue) -> None:
    """In a fresh process: time the op and measure the peak memory it adds."""
    from vos import ops

    device = torch.device(device_name)
    dtype = torch.float32
    args, kwargs = _inputs(case, device, dtype)
    fn = getattr(ops, case.op)

    def call():
        return fn(*args, backend=backend, **kwargs)

    with torch.inference_mode():  # one warm-up call (and autotuning on a GPU), then timed
        queue.put(time_calls(call, repeats, device))


def measure(case: Case, backend: str, device: str, repeats: int) -> tuple[float, float]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_run_case, args=(case, backend, device, repeats, queue))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(
            f"benchmark case {case.name} ({backend}) failed with exit code {process.exitcode}"
        )
    return queue.get()


def matmul_gflops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matmul throughput (the ceiling the ops are compared with)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    ms, _ = time_calls(lambda: torch.mm(a, b), repeats, device)
    return 2 * size**3 / (ms / 1000) / 1e9


def cases(args) -> list[Case]:
    out = []
    res4 = {"grid": RES4, "Ck": 128, "Cv": 512}
    for frames in args.memory_frames:
        out.append(Case(f"memory_read/global_T{frames}", "memory_read", {**res4, "T": frames}))
        out.append(
            Case(
                f"memory_read/box20_T{frames}",
                "memory_read",
                {**res4, "T": frames, "box_area": 0.2},
            )
        )
    if not args.quick:
        out.append(
            Case(
                "window_read/res2_r2",
                "window_read",
                {"grid": RES2, "Ck": 64, "Cv": 64, "radius": 2},
            )
        )
        out.append(
            Case(
                "memory_read/res2_dense", "memory_read", {"grid": RES2, "T": 2, "Ck": 64, "Cv": 128}
            )
        )
        out.append(
            Case(
                "gather_read/res2_K128",
                "gather_read",
                {"grid": RES2, "T": 2, "Ck": 64, "Cv": 128, "K": 128},
            )
        )
        out.append(
            Case(
                "memory_read/res3_dense",
                "memory_read",
                {"grid": RES3, "T": 2, "Ck": 128, "Cv": 256},
            )
        )
        out.append(
            Case(
                "gather_read/res3_grouped_g4_K128",
                "gather_read",
                {"grid": RES3, "T": 2, "Ck": 128, "Cv": 256, "K": 128, "group": 4},
            )
        )
    return out


def run(args) -> list[Record]:
    device = torch.device(args.device)
    backends = ["torch"] + (["triton"] if device.type == "cuda" else [])
    ceiling = matmul_gflops(device)
    records = []
    for case in cases(args):
        cost = _cost(case, dtype_bytes=4)
        for backend in backends:
            ms, peak = measure(case, backend, args.device, args.repeats)
            achieved = cost["flops"] / (ms / 1000) / 1e9
            records.append(
                Record(
                    name=case.name,
                    setting={
                        **case.setting,
                        "backend": backend,
                        "device": str(device),
                        "dtype": "float32",
                    },
                    ms=ms,
                    peak_mb=peak,
                    extra={
                        "gflop": cost["flops"] / 1e9,
                        "mbytes": cost["bytes"] / 2**20,
                        "gflops_per_s": achieved,
                        "matmul_fraction": achieved / ceiling,
                    },
                )
            )
    records.extend(_comparisons(records, ceiling))
    return records


def _comparisons(records: list[Record], ceiling: float) -> list[Record]:
    """The ratios the issue's targets are stated in."""
    by_name = {(r.name, r.setting["backend"]): r for r in records}
    out = []
    pairs = [(f"memory_read/global_T{t}", f"memory_read/box20_T{t}") for t in (1, 5, 10)] + [
        ("memory_read/res2_dense", "gather_read/res2_K128"),
        ("memory_read/res3_dense", "gather_read/res3_grouped_g4_K128"),
    ]
    for backend in {r.setting["backend"] for r in records}:
        for slow, fast in pairs:
            if (slow, backend) in by_name and (fast, backend) in by_name:
                a, b = by_name[(slow, backend)], by_name[(fast, backend)]
                out.append(
                    Record(
                        name=f"speedup/{fast}_vs_{slow}",
                        setting={"backend": backend},
                        ms=b.ms,
                        peak_mb=b.peak_mb,
                        extra={"speedup": a.ms / b.ms},
                    )
                )
        window = by_name.get(("window_read/res2_r2", backend))
        if window is not None:
            dense_mb = (RES2[0] * RES2[1]) ** 2 * 4 / 2**20  # one dense res2 affinity, fp32
            out.append(
                Record(
                    name="memory/window_read_res2_vs_dense_affinity",
                    setting={"backend": backend},
                    ms=window.ms,
                    peak_mb=window.peak_mb,
                    extra={"dense_affinity_mb": dense_mb, "fraction": window.peak_mb / dense_mb},
                )
            )
    out.append(
        Record(
            name="machine/matmul_fp32",
            setting={"size": 2048},
            ms=0.0,
            peak_mb=0.0,
            extra={"gflops_per_s": ceiling},
        )
    )
    return out


def add_arguments(parser) -> None:
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-frames", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--quick", action="store_true", help="res4 memory_read cases only")
