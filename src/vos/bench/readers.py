"""Reader-only time (no encoders, no decoder, no I/O), as RMNet's Table 5 measures it.

A 480p frame (padded to 480×864, res4 30×54), T memory frames, O objects whose regions
(their boxes padded by the reader's φ) cover ``--region-area`` of the frame; keys and values are random (the read's cost does not
depend on them). Each reader variant is built from its ``model=`` config plus overrides, so a
paper's switches (e.g. RMNet's ``memory_region`` / ``query_region``) are benchmarked as
configured. ``ms`` is the median of ``--repeats`` reads after one warm-up read.
"""

from __future__ import annotations

import statistics
import time

import hydra
import torch
from hydra import compose, initialize_config_dir

from vos.bench.common import Record, RssSampler
from vos.config import CONFIG_DIR
from vos.model.memory import MemoryBank
from vos.model.readers.base import FrameFeatures, ReaderState

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
}


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


def run(args) -> list[Record]:
    torch.manual_seed(0)
    device = torch.device(args.device)
    height, width = 480, 864
    grid = (height // 16, width // 16)
    records = []
    for label in args.variants:
        if label not in VARIANTS:
            raise SystemExit(f"unknown reader variant {label!r}; choose from {sorted(VARIANTS)}")
        model, overrides = VARIANTS[label]
        if not (CONFIG_DIR / "model" / f"{model}.yaml").is_file():
            print(f"# skipping {label}: conf/model/{model}.yaml does not exist yet")
            continue
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(
                "train", overrides=[f"model={model}", f"model/size={args.model_size}", *overrides]
            )
        reader = hydra.utils.instantiate(cfg.model.reader).to(device).eval()
        spec = reader.needs
        key_channels = spec.key_scales["res4"]
        padding_px = 16 * int(getattr(reader, "padding", 0))  # φ is given in res4 cells
        probs = _object_boxes(args.objects, height, width, args.region_area, padding_px).to(device)

        def frame(index: int, ck=key_channels, spec=spec) -> FrameFeatures:
            return FrameFeatures(
                index=index,
                frames=torch.zeros(1, 3, height, width, device=device),
                features={},
                keys={"res4": torch.randn(1, ck, *grid, device=device)},
                query_value=torch.randn(1, spec.value_channels, *grid, device=device),
                flow=torch.zeros(1, 2, height, width, device=device) if spec.needs_flow else None,
            )

        memory = MemoryBank()
        with torch.inference_mode():
            for t in range(args.memory_frames):
                memorised = frame(t)
                values = {
                    "res4": torch.randn(1, args.objects, spec.value_channels, *grid, device=device)
                }
                extras = reader.memorize(memorised, values, memory, object_probs=probs)
                memory.add(t, memorised.keys, values, permanent=t == 0, extras=extras)
            query = frame(args.memory_frames)
            state = ReaderState(previous_probs=probs)
            reader.read(query, memory, state)  # warm-up
            times = []
            with RssSampler() as sampler:
                for _ in range(args.repeats):
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    reader.read(query, memory, state)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - start)
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
                    "Ck": key_channels,
                    "Cv": spec.value_channels,
                    "device": str(device),
                },
                ms=statistics.median(times) * 1000,
                peak_mb=sampler.peak_growth_mb,
            )
        )
    baseline = next((r for r in records if r.name == "reader/rmnet/global-global"), None)
    baseline = baseline or next((r for r in records if r.name == "reader/stm"), None)
    for record in records:
        if baseline is not None:
            record.extra["speedup_vs_global"] = baseline.ms / record.ms
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
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
