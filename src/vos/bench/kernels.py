"""Triton kernels compiled for sm_80/sm_90 without a GPU: registers, spills, async copies, MMAs.

Every kernel of `vos.kernels` × autotune config × dtype, with per variant its registers,
spills, shared memory, async copies and tensor-core instructions.

Nothing runs and nothing is timed: each variant goes through Triton's whole pipeline (TTIR,
TTGIR, LLVM IR, PTX, then the bundled ``ptxas``) for the target named by ``--target``
(``sm_80`` = A100, ``sm_90`` = H100), with the arguments the wrappers in `vos.kernels` pass at
the papers' sizes, so Triton specialises sizes and strides (multiples of 16, strides of 1) as
it would on the GPU. The autotune configs are those the tuner would try at these sizes (after
the kernel's own pruning).

Per variant: ``regs`` and spills (bytes stored / loaded) from ``ptxas -v``; ``smem``, the
shared memory Triton allocates; static instruction counts in the PTX: ``cp.async``
(Ampere's asynchronous global→shared copies, what ``num_stages`` pipelining emits), ``bulk``
(Hopper's ``cp.async.bulk``, TMA), ``mma`` (``mma.sync``: tensor cores from sm_80) and
``wgmma`` (sm_90's warp-group MMA), ``fma`` (``fma.rn.f32``: fp32 products on the FMA
units); ``dots``, the ``tl.dot`` ops in the Triton IR with their fp32 input precision. These
are counts in the code, not executed instructions (a loop body counts once). ``--sass`` adds
counts from the disassembled cubin (``cuobjdump``, bundled with Triton).

Dtypes: ``fp32`` (the kernels' fp32 path), ``fp32-tf32``, ``fp16``, ``bf16``. ``fp32-tf32``
is the fp32 launch with TF32 allowed (each case's launch passes the kernel's TF32 switch, if
the kernel has one). It is compiled only when a ``tl.dot`` of the resulting Triton IR then
takes TF32 inputs; otherwise it is reported as ``not honoured`` (every ``tl.dot`` keeps
``input_precision="ieee"``) or ``n/a`` (the kernel has no ``tl.dot``), with nothing compiled.

Variants compile in worker processes (``--jobs``) with ``TRITON_INTERPRET=0``, whatever the
calling process uses, and a temporary Triton cache; a variant that fails to compile is
reported with its error and the others carry on.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

DTYPES = ("fp32", "fp32-tf32", "fp16", "bf16")
DEFAULT_TARGETS = ("sm_80", "sm_90")

# res4 of a 480p frame (padded to 480×864), res3 and res2
RES4, RES3, RES2 = (30, 54), (60, 108), (120, 216)
MEMORY_FRAMES = 5


# -- the kernels and how their wrappers launch them ----------------------------------------------


@dataclass(frozen=True)
class Case:
    """One kernel launched as its wrapper launches it at one of the papers' sizes."""

    name: str
    setting: dict
    launch: Callable  # (setting, torch dtype, tf32: bool) -> (autotuner, args, kwargs)


def _meta(*shape, dtype=None):
    import torch

    return torch.empty(*shape, device="meta", dtype=dtype or torch.float32)


def _pointer(tensor):
    """What Triton specialises a pointer argument on: its dtype and a 16-byte aligned address."""
    from triton.runtime.jit import MockTensor

    return MockTensor(tensor.dtype)


def _memory_read(setting: dict, dtype, tf32: bool):
    """`vos.kernels.memory_read`: ``MemoryReadFunction.forward`` / ``backward``'s launches."""
    import torch

    from vos.kernels import memory_read as kernels

    height, width = setting["grid"]
    queries, memories = height * width, setting["T"] * height * width
    ck, cv = setting["Ck"], setting["Cv"]
    query_key, memory_key = _meta(1, ck, queries, dtype=dtype), _meta(1, ck, memories, dtype=dtype)
    memory_value = _meta(1, cv, memories, dtype=dtype)
    launch = kernels._Launch(
        query_key,
        memory_key,
        memory_value,
        None,
        None,
        None,
        None,
        None,  # query_hw: the wrappers pass it with the Gaussian only (then GRID_W = W, not 1)
        setting["similarity"],
        ck**-0.5,
        tf32=tf32,  # what the wrapper derives from PyTorch's TF32 switch on a CUDA device
    )
    tensors = [query_key, memory_key, memory_value, launch.query_mask, launch.memory_mask,
               launch.centers, launch.sigma]  # fmt: skip
    fp32 = _meta(1, queries)  # readout / logsumexp / delta: fp32
    pointers = [_pointer(t) for t in tensors]
    constants = launch.constants
    part = setting["part"]
    top_k = setting.get("top_k")  # STCN's truncated softmax (forward only here)
    top_k_arguments = {"threshold_ptr": _pointer(fp32), "HAS_TOP_K": top_k is not None}
    if part == "fwd":
        counter = _meta(1, dtype=torch.int32)
        args = [*pointers, *map(_pointer, (fp32, fp32, counter)), *launch.sizes()]
        kwargs = {"COUNT_BLOCKS": False, "top_k": top_k or 0, **top_k_arguments, **constants}
        return kernels._memory_read_forward_kernel, args, kwargs
    grad = _pointer(query_key)  # dO and the gradients: the inputs' dtype
    common = [*pointers, grad, _pointer(fp32), _pointer(fp32)]
    if part == "bwd_dq":
        args = [*common, grad, *launch.sizes()]
        kwargs = {"BLOCK_CV": launch.block_cv, **top_k_arguments, **constants}
        return kernels._memory_read_backward_query_kernel, args, kwargs
    # dK and dV: one pass when Cv fits one value block, else a dK pass and a dV pass
    compute_dk, compute_dv = {"bwd_dkdv": (True, True), "bwd_dk": (True, False),
                              "bwd_dv": (False, True)}[part]  # fmt: skip
    args = [*common, grad, grad, *launch.sizes()]
    kwargs = {"COMPUTE_DK": compute_dk, "COMPUTE_DV": compute_dv, "BLOCK_CV": launch.block_cv,
              **top_k_arguments, **constants}  # fmt: skip
    return kernels._memory_read_backward_memory_kernel, args, kwargs


def _memory_top(setting: dict, dtype, tf32: bool):
    """`vos.kernels.memory_top`: ``memory_top_triton``'s launch (keys only, no autograd)."""
    import torch

    from vos.kernels import memory_read, memory_top

    height, width = setting["grid"]
    queries, memories = height * width, setting["T"] * height * width
    ck, k = setting["Ck"], setting["k"]
    query_key, memory_key = _meta(1, ck, queries, dtype=dtype), _meta(1, ck, memories, dtype=dtype)
    launch = memory_read._Launch(query_key, memory_key, memory_key, None, None, None, None, None,
                                 setting["similarity"], ck**-0.5, tf32=tf32)  # fmt: skip
    tensors = [query_key, memory_key, launch.query_mask, launch.memory_mask, launch.centers,
               launch.sigma, _meta(1), _meta(1, dtype=torch.int64)]  # fmt: skip
    sizes = launch.sizes()  # (scale, CK, CV, N, M, GRID_W, N_BUCKET, M_BUCKET, B_BUCKET)
    args = [*map(_pointer, tensors), *sizes[:2], *sizes[3:6], k, *sizes[6:]]
    kwargs = {"BLOCK_TOP": memory_top.block_top(k), **launch.constants}
    return memory_top._memory_top_kernel, args, kwargs


def _window_read(setting: dict, dtype, tf32: bool):
    """`vos.kernels.window_read`: ``WindowReadFunction``'s four launches (pixel-major tensors)."""
    import torch

    from vos.kernels import window_read as kernels

    height, width = setting["grid"]
    ck, cv = setting["Ck"], setting["Cv"]
    top_k = setting.get("top_k", 0)
    kwargs = kernels.kernel_arguments(1, ck, cv, height, width, setting["radius"],
                                      setting["similarity"], ck**-0.5, top_k)  # fmt: skip
    tensor = _pointer(_meta(1, dtype=dtype))  # keys, values, dO and the gradients
    fp32, int32 = _pointer(_meta(1)), _pointer(_meta(1, dtype=torch.int32))
    part = setting["part"]
    if part == "fwd":
        args = [tensor, tensor, tensor, tensor, fp32, fp32, int32, int32]
        return kernels._window_read_fwd_kernel, args, kwargs
    common = [tensor, tensor, tensor, tensor, fp32, int32, fp32, fp32]
    if part == "bwd_dq":
        return kernels._window_read_bwd_dq_kernel, [*common, tensor], kwargs
    kwargs.update(COMPUTE_DK=part == "bwd_dk", COMPUTE_DV=part == "bwd_dv")
    return kernels._window_read_bwd_memory_kernel, [*common, tensor, tensor], kwargs


def _gather_read(setting: dict, dtype, tf32: bool):
    """`vos.kernels.gather_read`: ``_GatherRead.forward`` / ``backward``'s launches."""
    import torch
    import triton

    from vos.kernels import gather_read as kernels

    height, width = setting["grid"]
    pixels = height * width
    memories = setting["T"] * pixels
    group = setting.get("group", 1)
    grouped = group > 1
    groups = pixels // group
    ck, cv, candidates = setting["Ck"], setting["Cv"], setting["K"]
    queries = _meta(1, ck, groups, group, dtype=dtype)  # plain: [B, Ck, M, 1]
    key_rows = _meta(1, memories, ck, dtype=dtype)  # pixel-major copies
    value_rows = _meta(1, memories, cv, dtype=dtype)
    index = _meta(1, groups, candidates, dtype=torch.int64)
    readout = _meta(1, cv, groups, group)  # fp32
    lse = _meta(1, groups, group)
    sizes = [ck**-0.5, groups, group, candidates, ck, cv]
    # the grouped kernels' tl.dot: TF32 for fp32 when `tf32`, as PyTorch's switch would say
    constants = kernels.launch_constants(
        grouped, (dtype, dtype, dtype), ck, group, torch.device("cuda"), tf32=tf32
    )
    kwargs = {"L2": setting["similarity"] == "l2", **constants}
    part = setting["part"]
    if part in ("bwd_dk", "bwd_dv"):
        # the memory-side pass: dk or dv per memory pixel from the sorted (row, candidate) pairs
        grad_readout = _meta(1, cv, groups, group, dtype=dtype)
        fp32, int64 = _meta(1), _meta(1, dtype=torch.int64)
        tensors = [queries, key_rows, grad_readout, fp32, fp32, int64, int64, fp32, fp32]
        memory_sizes = [groups, group, candidates, memories, ck, cv]
        strides = [queries, key_rows, grad_readout]
        args = [*map(_pointer, tensors), *memory_sizes, *(s for t in strides for s in t.stride())]
        kwargs = {"L2": setting["similarity"] == "l2", "COMPUTE_DK": part == "bwd_dk",
                  "BLOCK_G": triton.next_power_of_2(group)}  # fmt: skip
        return kernels._bwd_memory, args, kwargs
    if part == "fwd":
        tensors = [queries, key_rows, value_rows, index, readout, lse]
        strides = [queries, key_rows, value_rows, index, readout, lse]
        kernel = kernels._fwd_grouped if grouped else kernels._fwd_plain
    else:
        grad_readout = _meta(1, cv, groups, group, dtype=dtype)
        fp32 = _meta(1)
        tensors = [queries, key_rows, value_rows, index, grad_readout, lse, lse, fp32, fp32, fp32]
        strides = [queries, key_rows, value_rows, index, grad_readout, lse]
        kernel = kernels._bwd_grouped if grouped else kernels._bwd_plain
    args = [*map(_pointer, tensors), *sizes, *(s for t in strides for s in t.stride())]
    return kernel, args, kwargs


def _cases() -> list[Case]:
    memory = {"grid": RES4, "T": MEMORY_FRAMES, "Cv": 512}
    window = {"grid": RES4, "Ck": 64, "Cv": 512, "radius": 2, "similarity": "l2"}
    out = [
        # STM's global read (Ck 128, dot), forward and the training backward; Cv 512 spans
        # several value blocks, so dK and dV are separate passes
        *(
            Case(f"memory_read.{part}", {**memory, "Ck": 128, "similarity": "dot", "part": part},
                 _memory_read)
            for part in ("fwd", "bwd_dk", "bwd_dv", "bwd_dq")
        ),
        # STCN's (Ck 64, l2), forward only: full softmax and STCN's inference top-k 20
        Case("memory_read.fwd/l2", {**memory, "Ck": 64, "similarity": "l2", "part": "fwd"},
             _memory_read),
        Case("memory_read.fwd/l2-top20",
             {**memory, "Ck": 64, "similarity": "l2", "top_k": 20, "part": "fwd"}, _memory_read),
        # LMRC's global top-25 (its comparator's global side) over 5 global frames
        Case("memory_top/l2-top25",
             {**memory, "Ck": 64, "similarity": "l2", "k": 25}, _memory_top),
        # LMRC's local read at res4 (radius 2), and with its comparator's top-5
        *(
            Case(f"window_read.{part}", {**window, "part": part}, _window_read)
            for part in ("fwd", "bwd_dq", "bwd_dk", "bwd_dv")
        ),
        *(
            Case(f"window_read.{part}/top5", {**window, "top_k": 5, "part": part}, _window_read)
            for part in ("fwd", "bwd_dq", "bwd_dk")
        ),
        # HMMN's res3 read: k = 32 res4 candidates × 4 cells, shared by a res4 cell's 2×2
        # pixels; its res2 read: k/4 = 8 candidates × 16 cells, shared by 4×4 pixels; and
        # the plain form at res2
        *(
            Case(f"gather_read.{part}/grouped",
                 {"grid": RES3, "T": 2, "Ck": 128, "Cv": 256, "K": 128, "group": 4,
                  "similarity": "dot", "part": part},
                 _gather_read)
            for part in ("fwd", "bwd", "bwd_dk", "bwd_dv")
        ),
        *(
            Case(f"gather_read.{part}/grouped16",
                 {"grid": RES2, "T": 2, "Ck": 64, "Cv": 128, "K": 128, "group": 16,
                  "similarity": "dot", "part": part},
                 _gather_read)
            for part in ("fwd", "bwd")
        ),
        *(
            Case(f"gather_read.{part}",
                 {"grid": RES2, "T": 2, "Ck": 64, "Cv": 128, "K": 128, "similarity": "dot",
                  "part": part},
                 _gather_read)
            for part in ("fwd", "bwd")
        ),
    ]  # fmt: skip
    return out


CASES = {case.name: case for case in _cases()}


# -- compiling one variant (in a worker process) -------------------------------------------------


def _torch_dtype(label: str):
    import torch

    return {"fp32": torch.float32, "fp32-tf32": torch.float32, "fp16": torch.float16,
            "bf16": torch.bfloat16}[label]  # fmt: skip


def _tuner_configs(case: Case, dtype_label: str) -> tuple[list, int]:
    """The autotune configs the tuner would try for this launch, and how many it has in all."""
    tuner, args, kwargs = case.launch(
        case.setting, _torch_dtype(dtype_label), dtype_label == "fp32-tf32"
    )
    tuner.nargs = dict(zip(tuner.arg_names, args))
    try:
        kept = tuner.prune_configs(kwargs)
    finally:
        tuner.nargs = None
    return list(kept), len(tuner.configs)


def config_label(config) -> str:
    # STAGES (a loop's own num_stages) always equals num_stages, shown as s
    blocks = " ".join(
        f"{k.removeprefix('BLOCK_')}{v}" for k, v in config.kwargs.items() if k != "STAGES"
    )
    return f"{blocks} w{config.num_warps} s{config.num_stages}"


def list_configs(case_name: str, dtype_label: str = "fp32") -> tuple[list[str], int]:
    """(labels of the configs the tuner keeps for this dtype, all configs): a kernel may keep
    other configs for FMA products (IEEE fp32) than for tensor cores."""
    kept, total = _tuner_configs(CASES[case_name], dtype_label)
    return [config_label(c) for c in kept], total


_DOT = re.compile(r"\btt\.dot\b(?!_)[^\n]*")
_PTXAS = {
    "regs": re.compile(r"Used (\d+) registers"),
    "stack_bytes": re.compile(r"(\d+) bytes stack frame"),
    "spill_store_bytes": re.compile(r"(\d+) bytes spill stores"),
    "spill_load_bytes": re.compile(r"(\d+) bytes spill loads"),
}
# static counts in the PTX; cp.async without .bulk is Ampere's per-thread async copy
_PREDICATE = r"^\s*(?:@!?%?\w+\s+)?"  # an instruction, optionally predicated (@%p1, @!%p1)
_PTX = {
    "cp_async": re.compile(_PREDICATE + r"cp\.async\.c[ag]\.", re.M),
    "bulk": re.compile(_PREDICATE + r"cp\.async\.bulk\.(?!commit_group|wait_group)", re.M),
    "mma": re.compile(_PREDICATE + r"mma\.sync\.", re.M),
    "wgmma": re.compile(_PREDICATE + r"wgmma\.mma_async\.", re.M),
    "fma": re.compile(_PREDICATE + r"fma\.rn\.f32\b", re.M),
}
SASS_OPCODES = ("HMMA", "HGMMA", "LDGSTS", "UTMALDG", "UBLKCP", "FFMA", "LDL", "STL")


def dot_precisions(ttir: str) -> list[str]:
    """The input precision of each ``tt.dot`` in Triton IR (ieee is the unprinted default)."""
    out = []
    for line in _DOT.findall(ttir):
        found = re.search(r"inputPrecision\s*=\s*(\w+)", line)
        out.append(found.group(1) if found else "ieee")
    return out


def parse_ptxas_log(log: str) -> dict:
    out = {}
    for key, pattern in _PTXAS.items():
        found = pattern.findall(log)
        out[key] = int(found[-1]) if found else None
    return out


def count_ptx(ptx: str) -> dict:
    return {key: len(pattern.findall(ptx)) for key, pattern in _PTX.items()}


def count_sass(cubin: bytes) -> dict:
    """Opcode counts in the cubin's SASS, disassembled by the ``cuobjdump`` Triton bundles."""
    from triton import knobs

    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        sass = subprocess.run(
            [knobs.nvidia.cuobjdump.path, "-sass", file.name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return {op: len(re.findall(rf"\b{op}(?:\.\w+)*\b", sass)) for op in SASS_OPCODES}


def _ast_source(case: Case, dtype_label: str, config_index: int, backend):
    from triton.compiler import ASTSource
    from triton.runtime.jit import create_function_from_signature

    tuner, args, kwargs = case.launch(
        case.setting, _torch_dtype(dtype_label), dtype_label == "fp32-tf32"
    )
    tuner.nargs = dict(zip(tuner.arg_names, args))
    try:
        config = tuner.prune_configs(kwargs)[config_index]
    finally:
        tuner.nargs = None
    fn = tuner.fn
    launch_kwargs = {**kwargs, **config.all_kwargs()}
    while not hasattr(fn, "params"):  # an autotuner may wrap a heuristics wrapper
        for name, heuristic in getattr(fn, "values", {}).items():
            launch_kwargs[name] = heuristic({**dict(zip(fn.arg_names, args)), **launch_kwargs})
        fn = fn.fn
    # what JITFunction.run does before compiling, with the target's backend instead of the
    # current device's
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*args, **launch_kwargs)
    options, signature, constexprs, attrs = fn._pack_args(
        backend, launch_kwargs, bound, specialization, options
    )
    return ASTSource(fn, signature, constexprs, attrs), options, config


def _triton_ir(src, target, backend, options) -> str:
    """The kernel's Triton IR before any pass (cheap: no lowering, no ptxas)."""
    from triton._C.libtriton import ir

    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    module = src.make_ir(
        target, options, backend.get_codegen_implementation(options), backend.get_module_map(),
        context,
    )  # fmt: skip
    return str(module)


def compile_variant(case_name: str, target: str, dtype_label: str, config_index: int,
                    sass: bool = False) -> dict:  # fmt: skip
    """Compile one variant for ``target`` and read its figures (never raises)."""
    start = time.perf_counter()
    record: dict = {}
    try:
        import triton
        from triton import knobs
        from triton.backends.compiler import GPUTarget
        from triton.compiler import make_backend

        gpu = GPUTarget("cuda", _arch(target), 32)
        backend = make_backend(gpu)
        src, options, config = _ast_source(CASES[case_name], dtype_label, config_index, backend)
        record["config"] = config_label(config)
        if dtype_label == "fp32-tf32":
            precisions = dot_precisions(_triton_ir(src, gpu, backend, options))
            record["dots"] = len(precisions)
            record["tf32_dots"] = precisions.count("tf32")
            if not precisions:
                record["status"] = "n/a"
                record["note"] = "no tl.dot: fp32 products run on the FMA units either way"
                return record
            if "tf32" not in precisions:
                record["status"] = "not honoured"
                record["note"] = (
                    f"every tl.dot ({len(precisions)}) fixes input_precision="
                    f"{'/'.join(sorted(set(precisions)))}; compiles as fp32"
                )
                return record
        knobs.nvidia.dump_ptxas_log = True
        log = io.StringIO()
        with contextlib.redirect_stdout(log):  # ptxas -v, printed by Triton
            compiled = triton.compile(src, target=gpu, options=options.__dict__)
        precisions = dot_precisions(compiled.asm["ttir"])
        record.update(
            status="ok",
            **parse_ptxas_log(log.getvalue()),
            shared_bytes=int(compiled.metadata.shared),
            **count_ptx(compiled.asm["ptx"]),
            dots=len(precisions),
            tf32_dots=precisions.count("tf32"),
        )
        if sass:
            record["sass"] = count_sass(compiled.asm["cubin"])
    except Exception as error:  # a variant that does not compile is reported, not fatal
        record.update(status="error", error=f"{type(error).__name__}: {error}".strip())
    finally:
        record["compile_s"] = round(time.perf_counter() - start, 2)
    return record


def _arch(target: str) -> int:
    found = re.fullmatch(r"(?:sm_?)?(\d+)a?", target)
    if not found:
        raise ValueError(f"vos.bench kernels: unknown target {target!r}; expected e.g. sm_80")
    return int(found.group(1))


# -- running them all -----------------------------------------------------------------------------


def _init_worker() -> None:
    # set before the pool started; checked here because the kernels pick their configs (and
    # triton.jit its mode) when vos.kernels is imported
    assert os.environ.get("TRITON_INTERPRET") == "0", os.environ.get("TRITON_INTERPRET")


@contextlib.contextmanager
def _compiler_environment() -> Iterator[None]:
    """Worker processes start with the GPU configs, not the interpreter's, and compile into a
    temporary cache (so every variant runs ptxas and reports its registers)."""
    cache = tempfile.mkdtemp(prefix="vos-bench-kernels-")
    settings = {"TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": cache, "TRITON_ALWAYS_COMPILE": "1"}
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(cache, ignore_errors=True)


def _pool(jobs: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
    )


def _run_tasks(tasks: list[tuple], jobs: int, on_done: Callable | None = None) -> list:
    """``fn(*args)`` for each ``(fn, *args)`` in worker processes: its result, or the exception
    it raised (or a RuntimeError when its worker died)."""
    results: list = [None] * len(tasks)
    with _compiler_environment(), _pool(jobs) as pool:
        futures = {pool.submit(*task): i for i, task in enumerate(tasks)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except BrokenProcessPool as error:
                results[i] = RuntimeError(f"a worker process died ({error})")
            except Exception as error:
                results[i] = error
            if on_done:
                on_done(i, results[i])
    return results


def compile_variant_guarded(*task) -> dict:
    """`compile_variant` in a process forked from this worker, so that a crash inside the
    compiler (an abort in MLIR or LLVM) costs one variant, not the run."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_send_compiled, args=(send, task))
    process.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        result = None
    process.join()
    if result is None:
        return {"status": "error", "error": f"the compiler crashed (exit code {process.exitcode})"}
    return result


def _send_compiled(send, task) -> None:
    send.send(compile_variant(*task))
    send.close()


@dataclass
class KernelRecord:
    name: str
    setting: dict
    figures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"name": self.name, "setting": self.setting, **self.figures}


def _selected_cases(patterns: list[str] | None) -> list[Case]:
    if not patterns:
        return list(CASES.values())
    chosen = [
        case
        for case in CASES.values()
        if any(case.name == p or (p not in CASES and case.name.startswith(p)) for p in patterns)
    ]
    if not chosen:
        raise ValueError(
            f"vos.bench kernels: no kernel matches {patterns}; known: {', '.join(CASES)}"
        )
    return chosen


def run(args) -> list[KernelRecord]:
    for target in args.target:
        _arch(target)
    cases = _selected_cases(args.kernels)
    jobs = max(1, args.jobs)
    pairs = [(case, dtype) for case in cases for dtype in args.dtypes]
    listed = _run_tasks([(list_configs, case.name, dtype) for case, dtype in pairs], jobs)
    variants = []  # (case, target, dtype, config index, config label, configs kept / all)
    records: list[KernelRecord] = []
    for (case, dtype), configs in zip(pairs, listed):
        if isinstance(configs, BaseException):
            raise RuntimeError(f"vos.bench kernels: {case.name}: {configs}") from configs
        labels, total = configs
        kept = f"{len(labels)}/{total}"
        indices = range(min(len(labels), args.max_configs or len(labels)))
        for target in args.target:
            variants.extend((case, target, dtype, i, labels[i], kept) for i in indices)
    tasks = [(compile_variant_guarded, c.name, t, d, i, args.sass) for c, t, d, i, *_ in variants]
    progress = _Progress(len(tasks))
    results = _run_tasks(
        tasks, jobs, lambda i, r: progress(variants[i][0].name, *variants[i][1:3], r)
    )
    for (case, target, dtype, _, label, kept), figures in zip(variants, results):
        if isinstance(figures, BaseException):
            figures = {"status": "error", "error": str(figures)}
        config = figures.pop("config", None) or label
        setting = {"target": target, "dtype": dtype, "config": config, "tuner_configs": kept,
                   **case.setting}  # fmt: skip
        records.append(KernelRecord(case.name, setting, figures))
    return records


class _Progress:
    """One line per compiled variant on stderr (stdout stays the table or the JSON)."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def __call__(self, name, target, dtype, result) -> None:
        self.done += 1
        status = result.get("status", "error") if isinstance(result, dict) else "error"
        elapsed = time.perf_counter() - self.start
        print(
            f"[{self.done}/{self.total} {elapsed:.0f}s] {name} {target} {dtype}: {status}",
            file=sys.stderr,
            flush=True,
        )


# -- printing ------------------------------------------------------------------------------------

_SIZE_KEYS = ("grid", "T", "Ck", "Cv", "K", "group", "radius", "similarity")


def _sizes(setting: dict) -> str:
    parts = []
    for key in _SIZE_KEYS:
        if key in setting:
            value = setting[key]
            parts.append(f"{key}={'x'.join(map(str, value)) if key == 'grid' else value}")
    return " ".join(parts)


def _cell(figures: dict, key: str) -> str:
    value = figures.get(key)
    return "" if value is None else str(value)


def table_rows(records: list[KernelRecord]) -> list[list[str]]:
    rows = []
    for record in records:
        s, f = record.setting, record.figures
        status = f.get("status", "error")
        if status == "ok":
            spills = f.get("spill_store_bytes"), f.get("spill_load_bytes")
            spill = "0" if spills == (0, 0) else f"{spills[0]}/{spills[1]}"
            dots = str(f.get("dots", ""))
            if s["dtype"].startswith("fp32") and f.get("dots"):
                dots += " tf32" if f.get("tf32_dots") else " ieee"
            figures = [_cell(f, "regs"), spill, f"{f.get('shared_bytes', 0) / 1024:.0f}",
                       _cell(f, "cp_async"), _cell(f, "bulk"), _cell(f, "mma"), _cell(f, "wgmma"),
                       _cell(f, "fma"), dots]  # fmt: skip
            note = ""
        else:
            figures = [""] * 9
            note = f"{status}: {f.get('note') or _first_line(f.get('error', ''))}"
        rows.append([record.name, s["target"], s["dtype"], s.get("config") or "", *figures,
                     f"{f.get('compile_s', 0):.1f}", note])  # fmt: skip
    return rows


TABLE_COLUMNS = ["kernel", "target", "dtype", "config", "regs", "spill st/ld B", "smem KiB",
                 "cp.async", "bulk", "mma", "wgmma", "fma", "dots", "s", "note"]  # fmt: skip


def _first_line(text: str, limit: int = 160) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def print_records(records: list[KernelRecord], as_json: bool) -> None:
    """JSON, or the per-variant table, then one row per kernel × target × dtype, then totals."""
    if as_json:
        print(json.dumps([r.as_dict() for r in records], indent=2))
        return
    from rich.console import Console

    console = Console(width=max(200, Console().width))
    for name, sizes in dict.fromkeys((r.name, _sizes(r.setting)) for r in records):
        console.print(f"{name}: {sizes}", markup=False)
    console.print(
        _table(
            TABLE_COLUMNS,
            table_rows(records),
            "static instruction counts in the PTX; spills in bytes (stores/loads); "
            "smem: shared memory Triton allocates",
        )
    )
    console.print(
        _table(
            SUMMARY_COLUMNS,
            summary_rows(records),
            "configs: compiled of those the tuner keeps (of all); min–max over the compiled "
            "configs; spilling: configs that spill (most bytes stored)",
        )
    )
    console.print(summary(records), markup=False)


def _table(columns: list[str], rows: list[list[str]], caption: str):
    from rich.markup import escape
    from rich.table import Table

    table = Table(caption=caption)
    for column in columns:
        table.add_column(column, no_wrap=column != "note")
    for row in rows:
        table.add_row(*map(escape, row))
    return table


SUMMARY_COLUMNS = ["kernel", "target", "dtype", "configs", "regs", "spilling", "smem KiB",
                   "cp.async", "mma", "wgmma", "fma", "note"]  # fmt: skip


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}–{high}"


def summary_rows(records: list[KernelRecord]) -> list[list[str]]:
    """One row per kernel × target × dtype, over its configs."""
    groups: dict[tuple, list[KernelRecord]] = {}
    for record in records:
        key = (record.name, record.setting["target"], record.setting["dtype"])
        groups.setdefault(key, []).append(record)
    rows = []
    for (name, target, dtype), members in groups.items():
        ok = [r.figures for r in members if r.figures.get("status") == "ok"]
        others = [r.figures for r in members if r.figures.get("status") != "ok"]
        kept, _, total = members[0].setting.get("tuner_configs", "").partition("/")
        of = f" of {kept}" + (f" ({total})" if total and total != kept else "") if kept else ""
        row = [name, target, dtype, f"{len(ok)}{of}"]
        if ok:
            spills = [f["spill_store_bytes"] or 0 for f in ok]
            spilling = sum(bool(v) for v in spills)
            row += [
                _span([f["regs"] or 0 for f in ok]),
                f"{spilling} ({max(spills)} B)" if spilling else "0",
                _span([round(f["shared_bytes"] / 1024) for f in ok]),
                *(_span([f[key] for f in ok]) for key in ("cp_async", "mma", "wgmma", "fma")),
            ]
        else:
            row += [""] * 7
        notes = sorted({f"{f.get('status')}: {f.get('note') or _first_line(f.get('error', ''))}"
                        for f in others})  # fmt: skip
        row.append("; ".join(notes))
        rows.append(row)
    return rows


def summary(records: list[KernelRecord]) -> str:
    ok = [r for r in records if r.figures.get("status") == "ok"]
    failed = sum(r.figures.get("status") == "error" for r in records)
    spilling = sum(bool(r.figures.get("spill_store_bytes")) for r in ok)
    no_async = sum(not (r.figures.get("cp_async") or r.figures.get("bulk")) for r in ok)
    no_mma = sum(not (r.figures.get("mma") or r.figures.get("wgmma")) for r in ok)
    skipped = len(records) - len(ok) - failed
    return (
        f"{len(ok)} variants compiled, {failed} failed, {skipped} not compiled (TF32 not "
        f"honoured or no tl.dot); of those compiled {spilling} spill, {no_async} have no async "
        f"copy, {no_mma} no tensor-core instruction"
    )


def add_arguments(parser) -> None:
    parser.add_argument(
        "--target", nargs="+", default=list(DEFAULT_TARGETS), help="e.g. sm_80 (A100) sm_90 (H100)"
    )
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument(
        "--kernels",
        nargs="+",
        metavar="PREFIX",
        help=f"only these kernels, by name or prefix of the name (of {', '.join(CASES)})",
    )
    parser.add_argument(
        "--max-configs", type=int, default=0, help="only the first N autotune configs (0: all)"
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sass", action="store_true", help="add opcode counts from the SASS")
