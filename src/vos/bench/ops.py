"""Memory-read ops at the papers' sizes: time, peak memory, FLOPs, bytes, matmul fraction.

480p input gives 30×54 at res4, 60×108 at res3 and 120×216 at res2. Each case runs in a fresh
process so that its peak memory (resident set on the CPU, the allocator's peak on a GPU) is
its own; ``ms`` is the median over ``--repeats`` calls after one warm-up call (which also
compiles: Triton's autotuning, flex_attention's ``torch.compile``). The achieved throughput is
divided by this machine's measured matmul throughput in the same dtype.

Backends (``--backends``): ``torch`` (the reference), ``flex`` (``memory_read`` cases only:
flex_attention, `vos.ops.flex_read`; compiled, on the CPU too) and ``triton`` (on CUDA). A
backend that fails on a case gives a record with ``error`` and no time; nothing is ever
estimated in place of a measurement. ``--dtype``: fp32, tf32 (fp32 tensors with
``torch.backends.cuda.matmul.allow_tf32``, which PyTorch's matmuls, flex's compiled kernel and
Triton kernels that follow PyTorch's TF32 setting honour), fp16 or bf16.

``--roofline`` adds to every op record its bytes under the backend's data-flow model
(``model``: ``fused`` or ``materialised``), ``flop_per_byte`` and the ideal (roofline) time in
µs on an H100 SXM, H200 SXM and A100 SXM for the dtype (`vos.bench.roofline`: the models and the
data-sheet peaks); on one of those GPUs also ``roofline_fraction`` = ideal / measured.

Cases (the comparisons issue figures are read from):
- ``memory_read/global`` vs ``memory_read/box20``: T = 1, 5, 10 res4 memory frames; boxes of
  20% of the frame area on memory and query (RMNet's measured mean);
- ``window_read/res2`` (r = 2) vs one dense res2 affinity: peak memory growth;
- ``gather_read/res2`` (K = 128, first + previous frame) vs ``memory_read/res2_dense``, plain
  (a candidate list per pixel) and grouped as HMMN reads it (g = 16: a res4 cell's 4×4 pixels
  share one list);
- ``gather_read/res3_grouped`` (g = 4, K = 128) vs ``memory_read/res3_dense``;
- every case with several backends: ``speedup/<case>/<fast>_vs_<slow>`` for triton vs torch,
  triton vs flex and flex vs torch.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from queue import Empty

import torch

from vos.bench import roofline
from vos.bench.common import Record
from vos.profiling import time_calls

RES4, RES3, RES2 = (30, 54), (60, 108), (120, 216)
DTYPES = {
    "fp32": torch.float32,
    "tf32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
BACKENDS = ("torch", "flex", "triton")
# the fastest first: ratios are reported as slow.ms / fast.ms
BACKEND_PAIRS = [("triton", "torch"), ("triton", "flex"), ("flex", "torch")]


@dataclass(frozen=True)
class Case:
    name: str
    op: str  # memory_read | memory_top | window_read | gather_read
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
    if case.op == "memory_top":
        hw, frames = tuple(s["grid"]), s["T"]
        m, n = hw[0] * hw[1], frames * hw[0] * hw[1]
        return (randn(1, s["Ck"], m), randn(1, s["Ck"], n), s["k"]), {"similarity": "l2"}
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
    from vos.ops.memory_read import memory_read_cost, memory_top_cost
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
    if case.op == "memory_top":
        return memory_top_cost(1, s["Ck"], s["T"] * m, m, s["k"], dtype_bytes)
    if case.op == "window_read":
        return window_read_cost(1, s["Ck"], s["Cv"], hw[0], hw[1], s["radius"], dtype_bytes)
    return gather_read_cost(1, s["Ck"], s["Cv"], m, s["K"], s.get("group", 1), dtype_bytes)


def set_tf32(dtype_name: str) -> None:
    """TF32 on for ``tf32``, off otherwise: the fp32 figures are IEEE fp32's."""
    torch.backends.cuda.matmul.allow_tf32 = dtype_name == "tf32"


def _run_case(
    case: Case, backend: str, device_name: str, dtype_name: str, repeats: int, queue
) -> None:
    """In a fresh process: time the op and measure the peak memory it adds."""
    from vos import ops

    try:
        set_tf32(dtype_name)
        device = torch.device(device_name)
        args, kwargs = _inputs(case, device, DTYPES[dtype_name])
        fn = getattr(ops, case.op)

        def call():
            return fn(*args, backend=backend, **kwargs)

        with torch.inference_mode():  # one warm-up call (autotuning, compiling), then timed
            queue.put(("ok", time_calls(call, repeats, device)))
    except Exception as error:  # reported by the parent as the case's error
        queue.put(("error", f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"))


def measure(
    case: Case, backend: str, device: str, repeats: int, dtype_name: str = "fp32"
) -> tuple[float, float]:
    """``(ms, peak_mb)`` of the case in a fresh process; RuntimeError naming the case when it
    fails."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(
        target=_run_case, args=(case, backend, device, dtype_name, repeats, queue)
    )
    process.start()
    process.join()
    try:
        outcome = queue.get(timeout=10)
    except Empty:  # the process died before reporting (a crash, the OOM killer)
        outcome = ("error", f"exit code {process.exitcode}")
    if outcome[0] != "ok":
        raise RuntimeError(f"benchmark case {case.name} ({backend}) failed: {outcome[1]}")
    return outcome[1]


def matmul_gflops(
    device: torch.device, size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32
) -> float:
    """This machine's matmul throughput in ``dtype`` (the ceiling the ops are compared with)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
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
        # LMRC's global top-25 over 5 global frames (Cv 0: keys only)
        out.append(
            Case(
                "memory_top/global_T5_k25",
                "memory_top",
                {"grid": RES4, "T": 5, "Ck": 64, "Cv": 0, "k": 25},
            )
        )
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
                "gather_read/res2_grouped_g16_K128",
                "gather_read",
                {"grid": RES2, "T": 2, "Ck": 64, "Cv": 128, "K": 128, "group": 16},
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
    if getattr(args, "cases", None):
        unknown = sorted(set(args.cases) - {case.name for case in out})
        if unknown:
            raise ValueError(
                f"unknown case(s) {', '.join(unknown)}; expected among "
                f"{', '.join(case.name for case in out)}"
            )
        out = [case for case in out if case.name in args.cases]
    return out


def default_backends(device: torch.device) -> list[str]:
    """Every backend that runs on the device: Triton only on CUDA (its interpreter is for
    tests, not timings); flex_attention compiles on the CPU too."""
    return ["torch", "flex"] + (["triton"] if device.type == "cuda" else [])


def _backend_runs(case: Case, backend: str) -> bool:
    return backend != "flex" or case.op == "memory_read"


def _roofline(case: Case, backend: str, cost: dict, dtype_name: str, ms, gpu) -> dict:
    """The record's roofline fields: bytes under the backend's model (`vos.bench.roofline`)."""
    setting = {**case.setting, "dtype_bytes": roofline.DTYPE_BYTES[dtype_name]}
    bytes_moved = cost["bytes"]
    model = "fused"
    if backend == "torch":
        model = "materialised"
        pairs = cost["flops"] / (2 * (setting["Ck"] + setting["Cv"]))
        bytes_moved += roofline.materialised_extra_bytes(case.op, setting, pairs)
    return {
        "model": model,
        "model_mbytes": bytes_moved / 2**20,
        **roofline.roofline_fields(cost["flops"], bytes_moved, dtype_name, ms, gpu),
    }


def run(args) -> list[Record]:
    device = torch.device(args.device)
    backends = args.backends or default_backends(device)
    if "triton" in backends and device.type != "cuda":
        raise ValueError("--backends triton needs --device cuda (the interpreter is for tests)")
    selected = cases(args)
    set_tf32(args.dtype)
    ceiling = matmul_gflops(device, dtype=DTYPES[args.dtype])
    gpu = roofline.gpu_key(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    records = []
    for case in selected:
        cost = _cost(case, dtype_bytes=roofline.DTYPE_BYTES[args.dtype])
        for backend in [b for b in backends if _backend_runs(case, b)]:
            setting = {
                **case.setting,
                "backend": backend,
                "device": str(device),
                "dtype": args.dtype,
            }
            extra = {"gflop": cost["flops"] / 1e9, "mbytes": cost["bytes"] / 2**20}
            try:
                ms, peak = measure(case, backend, args.device, args.repeats, args.dtype)
            except RuntimeError as error:
                if backend == "torch":  # the reference runs everywhere: its failure is a bug
                    raise
                ms, peak, extra["error"] = float("nan"), float("nan"), str(error)
            else:
                achieved = cost["flops"] / (ms / 1000) / 1e9
                extra.update(gflops_per_s=achieved, matmul_fraction=achieved / ceiling)
            if args.roofline:
                measured = None if "error" in extra else ms
                extra.update(_roofline(case, backend, cost, args.dtype, measured, gpu))
            records.append(
                Record(name=case.name, setting=setting, ms=ms, peak_mb=peak, extra=extra)
            )
    records.extend(_comparisons(records, ceiling, args.dtype))
    return records


def _comparisons(records: list[Record], ceiling: float, dtype_name: str = "fp32") -> list[Record]:
    """The ratios the issue's targets are stated in, and each backend against the others."""
    records = [r for r in records if "error" not in r.extra]
    by_name = {(r.name, r.setting["backend"]): r for r in records}
    out = []
    for name in dict.fromkeys(r.name for r in records):
        for fast, slow in BACKEND_PAIRS:
            if (name, fast) in by_name and (name, slow) in by_name:
                a, b = by_name[(name, slow)], by_name[(name, fast)]
                out.append(
                    Record(
                        name=f"speedup/{name}/{fast}_vs_{slow}",
                        setting={"backend": fast, "baseline": slow},
                        ms=b.ms,
                        peak_mb=b.peak_mb,
                        extra={"speedup": a.ms / b.ms},
                    )
                )
    pairs = [(f"memory_read/global_T{t}", f"memory_read/box20_T{t}") for t in (1, 5, 10)] + [
        ("memory_read/res2_dense", "gather_read/res2_K128"),
        ("memory_read/res2_dense", "gather_read/res2_grouped_g16_K128"),
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
            name=f"machine/matmul_{dtype_name}",
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
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="fp32",
        help="input precision; tf32 = fp32 tensors with TF32 matmuls allowed",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        help="default: torch and flex, and triton on CUDA",
    )
    parser.add_argument(
        "--cases", nargs="+", metavar="NAME", help="only these cases (e.g. memory_read/global_T10)"
    )
    parser.add_argument(
        "--roofline",
        action="store_true",
        help="add bytes by data-flow model, FLOP/byte and the ideal H100/H200/A100 times",
    )
