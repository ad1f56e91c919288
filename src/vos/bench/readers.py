"""Reader-only time (no encoders, no decoder, no I/O), as RMNet's Table 5 measures it.

A 480p frame (padded to 480×864, res4 30×54), T memory frames, O objects whose regions
(their boxes padded by the reader's φ) cover ``--region-area`` of the frame; keys and values
are random (the read's cost does not depend on them). Each reader variant is built from its
``model=`` config plus overrides, so a paper's switches (e.g. RMNet's ``memory_region`` /
``query_region``) are benchmarked as configured. ``ms`` is the median of ``--repeats`` reads
after one warm-up read.

LCM: ``lcm`` is GRM + PGM + ORM, ``lcm/grm-only`` its STM part; ``added_ms_vs_stm`` is what
PGM and ORM add to STM's read (compare it with STM's whole frame from ``bench inference``).

LMRC: ``lmrc`` is the full reader (Table 4's F); ``lmrc/gmr-only`` (A), ``lmrc/gmr-lmr`` (C)
and ``lmrc/gmr-lmr-slmr`` (D) add its parts one at a time, so ``split_ms`` on ``lmrc`` gives GMR,
LMR, SLMR and the comparator as differences of medians. LMRC's memory holds ``--memory-frames``
global frames plus the previous frame (its local memory).

HMMN: ``hmmn`` times its whole read (kernel at res4 + top-k guided res3/res2);
``hmmn/fine-topk`` and ``hmmn/fine-dense`` time the fine-scale part alone (candidate
selection and the res3 + res2 reads, against the dense reads of the same fine memory: first
and previous frame). ``--kernel-frames`` times the res4 kernel alone for several memory sizes:
HMMN's tracked kernel (one tracking step per frame, history kept) against KMN's global one.
"""

from __future__ import annotations

import statistics
import time
from functools import partial

import hydra
import torch
from hydra import compose, initialize_config_dir

from vos.bench.common import Record, RssSampler
from vos.config import CONFIG_DIR
from vos.model.memory import MemoryBank
from vos.model.readers.base import FrameFeatures, ReaderState, scale_of

# (label, model config, reader overrides)
VARIANTS = {
    "stm": ("stm", []),
    "rmnet/global-global": (
        "rmnet",
        ["model.reader.memory_region=false", "model.reader.query_region=false"],
    ),
    "rmnet/regional-global": (
        "rmnet",
        ["model.reader.memory_region=true", "model.reader.query_region=false"],
    ),
    "rmnet/global-regional": (
        "rmnet",
        ["model.reader.memory_region=false", "model.reader.query_region=true"],
    ),
    "rmnet/regional-regional": (
        "rmnet",
        ["model.reader.memory_region=true", "model.reader.query_region=true"],
    ),
    "hmmn": ("hmmn", []),
    "hmmn/fine-topk": ("hmmn", []),
    "hmmn/fine-dense": ("hmmn", ["model.reader.inference_top_k=null"]),
    "lcm": ("lcm", []),
    "lcm/grm-only": ("lcm", ["model.reader.use_pgm=false", "model.reader.use_orm=false"]),
    "lmrc": ("lmrc", []),  # Table 4 setting F
    "lmrc/gmr-only": ("lmrc", ["model/lmrc_setting=A"]),
    "lmrc/gmr-lmr": ("lmrc", ["model/lmrc_setting=C"]),
    "lmrc/gmr-lmr-slmr": ("lmrc", ["model/lmrc_setting=D"]),
}
# LMRC's parts, timed as the differences between the variants that add them one at a time
LMRC_PARTS = {
    "gmr": ("lmrc/gmr-only", None),
    "lmr": ("lmrc/gmr-lmr", "lmrc/gmr-only"),
    "slmr": ("lmrc/gmr-lmr-slmr", "lmrc/gmr-lmr"),
    "comparator": ("lmrc", "lmrc/gmr-lmr-slmr"),
}
STRIDES = {"res4": 16, "res3": 8, "res2": 4}


def _object_boxes(
    objects: int, height: int, width: int, area: float, padding_px: int
) -> torch.Tensor:
    """[1, O, H, W] soft masks: boxes at spread-out positions whose regions, once padded by
    ``padding_px`` on each side (RMNet's φ), cover ``area`` of the frame."""
    side = area**0.5
    bh = max(1, round(height * side) - 2 * padding_px)
    bw = max(1, round(width * side) - 2 * padding_px)
    probs = torch.zeros(1, objects, height, width)
    for o in range(objects):
        y0 = (height - bh) * (o + 1) // (objects + 1)
        x0 = (width - bw) * (objects - o) // (objects + 1)
        probs[0, o, y0 : y0 + bh, x0 : x0 + bw] = 1.0
    return probs


def _build_reader(model: str, size: str, overrides: list[str], device: torch.device):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", f"model/size={size}", *overrides])
    return hydra.utils.instantiate(cfg.model.reader).to(device).eval()


def _frame(index: int, spec, height: int, width: int, device) -> FrameFeatures:
    """Random keys at every scale the reader reads, and the query value."""
    keys = {
        name: torch.randn(
            1,
            ck,
            height // STRIDES[scale_of(name)],
            width // STRIDES[scale_of(name)],
            device=device,
        )
        for name, ck in spec.key_scales.items()
    }
    grid = (height // 16, width // 16)
    return FrameFeatures(
        index=index,
        frames=torch.zeros(1, 3, height, width, device=device),
        features={},
        keys=keys,
        query_value=torch.randn(1, spec.value_channels, *grid, device=device),
        flow=torch.zeros(1, 2, height, width, device=device) if spec.needs_flow else None,
    )


def _values(spec, objects: int, height: int, width: int, device) -> dict[str, torch.Tensor]:
    channels = {"res4": spec.value_channels, **spec.fine_value_channels}
    return {
        scale: torch.randn(
            1, objects, c, height // STRIDES[scale], width // STRIDES[scale], device=device
        )
        for scale, c in channels.items()
    }


def _time(call, repeats: int, device) -> tuple[float, float]:
    """Median milliseconds of ``repeats`` calls after a warm-up, and the RSS growth."""
    call()
    times = []
    with RssSampler() as sampler:
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            call()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, sampler.peak_growth_mb


def _fine_part(reader, query, memory, state):
    """HMMN's fine-scale read alone: candidates (none when dense) and the res3/res2 reads."""
    grid = tuple(query.keys["res4"].shape[-2:])
    k = reader.inference_top_k
    candidates = None if k is None else reader.fine_candidates(query.keys["res4"], memory, None, k)
    return [reader._read_fine(s, query, memory, candidates, grid) for s in reader.fine_scales]


def run(args) -> list[Record]:
    torch.manual_seed(0)
    device = torch.device(args.device)
    height, width = args.height, args.width
    grid = (height // 16, width // 16)
    records = []
    for label in args.variants:
        if label not in VARIANTS:
            raise SystemExit(f"unknown reader variant {label!r}; choose from {sorted(VARIANTS)}")
        model, overrides = VARIANTS[label]
        reader = _build_reader(model, args.model_size, overrides, device)
        spec = reader.needs
        padding_px = 16 * int(getattr(reader, "padding", 0))  # φ is given in res4 cells
        probs = _object_boxes(args.objects, height, width, args.region_area, padding_px).to(device)
        memory = MemoryBank()
        # LMRC reads T global frames and, besides them, the previous frame
        frames = args.memory_frames + (1 if model == "lmrc" else 0)
        with torch.inference_mode():
            for t in range(frames):
                memorised = _frame(t, spec, height, width, device)
                values = _values(spec, args.objects, height, width, device)
                extras = reader.memorize(memorised, values, memory, object_probs=probs)
                memory.add(t, memorised.keys, values, permanent=t == 0, extras=extras)
            query = _frame(frames, spec, height, width, device)
            state = ReaderState(previous_probs=probs)
            if label.startswith("hmmn/fine"):
                ms, peak = _time(
                    partial(_fine_part, reader, query, memory, state), args.repeats, device
                )
            else:
                ms, peak = _time(partial(reader.read, query, memory, state), args.repeats, device)
        records.append(
            Record(
                name=f"reader/{label}",
                setting={
                    "input": f"{height}x{width}",
                    "res4": f"{grid[0]}x{grid[1]}",
                    "T": args.memory_frames,
                    "objects": args.objects,
                    "region_area": args.region_area,
                    "size": args.model_size,
                    "Ck": spec.key_scales["res4"],
                    "Cv": spec.value_channels,
                    "device": str(device),
                },
                ms=ms,
                peak_mb=peak,
            )
        )
    baseline = next((r for r in records if r.name == "reader/rmnet/global-global"), None)
    baseline = baseline or next((r for r in records if r.name == "reader/stm"), None)
    for record in records:
        if baseline is not None and record.name.startswith(("reader/stm", "reader/rmnet")):
            record.extra["speedup_vs_global"] = baseline.ms / record.ms
    by_name = {r.name: r for r in records}
    if {"reader/lcm", "reader/stm"} <= by_name.keys():
        # LCM's target: PGM + ORM on top of STM's read (the rest of a frame is shared)
        lcm, stm = by_name["reader/lcm"], by_name["reader/stm"]
        lcm.extra["added_ms_vs_stm"] = lcm.ms - stm.ms
    if {f"reader/{whole}" for whole, _ in LMRC_PARTS.values()} <= by_name.keys():
        by_name["reader/lmrc"].extra["split_ms"] = {
            part: by_name[f"reader/{whole}"].ms - (by_name[f"reader/{base}"].ms if base else 0.0)
            for part, (whole, base) in LMRC_PARTS.items()
        }
    if {"reader/hmmn/fine-topk", "reader/hmmn/fine-dense"} <= by_name.keys():
        topk, dense = by_name["reader/hmmn/fine-topk"], by_name["reader/hmmn/fine-dense"]
        topk.extra["speedup_vs_dense"] = dense.ms / topk.ms
    if any(label.startswith("hmmn") for label in args.variants):
        records.extend(_kernel_scaling(args, device))
    return records


def _kernel_scaling(args, device) -> list[Record]:
    """The res4 kernel alone at several memory sizes, in steady state (the tracking history
    holds every memory frame, as it does from the second frame of a video on)."""
    records = []
    height, width = args.height, args.width
    for kernel in ("hmmn", "kmn"):
        reader = _build_reader("hmmn", args.model_size, [f"model.reader.kernel={kernel}"], device)
        spec = reader.needs
        for frames in args.kernel_frames:
            memory, state = MemoryBank(), ReaderState()
            with torch.inference_mode():
                for t in range(frames):
                    memorised = _frame(t, spec, height, width, device)
                    memory.add(t, memorised.keys, _values(spec, 1, height, width, device))
                    if kernel == "hmmn" and t < frames - 1:  # the history, one frame at a time
                        query_key = _frame(t + 1, spec, height, width, device).keys["res4"]
                        reader.kernel_centres(query_key, memory, state)
                        reader.end_of_read(FrameFeatures(t + 1, None, {}, {}, None), state)
                history = state.extras.get("hmmn_tracks")
                query_key = _frame(frames, spec, height, width, device).keys["res4"]

                def step(
                    reader=reader, query_key=query_key, memory=memory, state=state, history=history
                ):
                    if history is not None:  # the same chained step at every repeat
                        state.extras["hmmn_tracks"] = {
                            "query": history["query"],
                            "tracks": dict(history["tracks"]),
                        }
                    reader.kernel_centres(query_key, memory, state)

                ms, peak = _time(step, args.repeats, device)
            records.append(
                Record(
                    name=f"reader/{kernel}/kernel-T{frames}",
                    setting={
                        "input": f"{height}x{width}",
                        "T": frames,
                        "size": args.model_size,
                        "window": reader.window if kernel == "hmmn" else None,
                        "device": str(device),
                    },
                    ms=ms,
                    peak_mb=peak,
                )
            )
    return records


def add_arguments(parser) -> None:
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument(
        "--model-size", default="paper", help="model/size: paper (Ck 128, Cv 512) | tiny"
    )
    parser.add_argument("--memory-frames", type=int, default=5)
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--region-area", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--height", type=int, default=480, help="input height (480p padded)")
    parser.add_argument("--width", type=int, default=864, help="input width (854 padded to 864)")
    parser.add_argument(
        "--kernel-frames",
        type=int,
        nargs="*",
        default=[2, 10, 20],
        help="memory sizes for HMMN's res4 kernel timing, run with any hmmn variant",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
