"""Reader-only time (no encoders, no decoder, no I/O), as RMNet's Table 5 measures it.

A 480p frame (padded to 480×864, res4 30×54), T memory frames, O objects whose regions
cover ``--region-area`` of the frame; keys and values are random (the read's cost does not
depend on them). ``ms`` is the median of ``--repeats`` reads after one warm-up read.

What is timed comes from each model's config (``conf/model/<name>.yaml``, ``bench:``), so a
new reader is benchmarked by its config alone::

    bench:
      region_padding_cells: 4      # optional: boxes are drawn so their padded regions
                                   #   (this many res4 cells a side) cover --region-area
      variants:
        rmnet/global-global:       # a label
          overrides: [model.reader.memory_region=false]   # of the model config
          part: null               # a part of the read (`MemoryReader.parts`), or the read
          baseline: stm            # adds speedup_vs_baseline and added_ms_vs_baseline
          objects: 1               # instead of --objects
          memory_frames: [2, 10]   # instead of --memory-frames; a list gives one record each

The memory is filled frame by frame as in a video: before each memory frame after the first
joins, the timed call runs once on it as the query (untimed), so state kept between frames
(HMMN's tracks) is what it would be; each timed call then starts from that same state. A
reader whose ``FeatureSpec.previous_frame_apart`` reads the most recent frame as a local
memory (LMRC) gets T frames besides it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from vos.bench.common import Record
from vos.config import compose_config, group_options, instantiate, search_path_override
from vos.model.memory import MemoryBank
from vos.model.readers.base import FrameFeatures, scale_of
from vos.profiling import time_calls

STRIDES = {"res4": 16, "res3": 8, "res2": 4}


@dataclass(frozen=True)
class Variant:
    label: str
    model: str
    overrides: tuple[str, ...] = ()
    part: str | None = None
    baseline: str | None = None
    objects: int | None = None
    memory_frames: int | None = None


def variants_of(model: str, config_dirs=()) -> list[Variant]:
    """The variants ``conf/model/<model>.yaml`` lists under ``bench.variants``."""
    cfg = compose_config("train", [f"model={model}", *search_path_override(config_dirs)])
    bench = cfg.model.get("bench") or {}
    found = []
    for label, raw in (bench.get("variants") or {}).items():
        raw = raw or {}
        unknown = set(raw) - {"overrides", "part", "baseline", "objects", "memory_frames"}
        if unknown:
            raise ValueError(f"model={model}: bench.variants.{label} has unknown keys {unknown}")
        frames = raw.get("memory_frames")
        sizes = [frames] if frames is None or isinstance(frames, int) else list(frames)
        for size in sizes:
            found.append(
                Variant(
                    label=f"{label}-T{size}" if size is not None and len(sizes) > 1 else label,
                    model=model,
                    overrides=tuple(str(o) for o in raw.get("overrides") or ()),
                    part=raw.get("part"),
                    baseline=raw.get("baseline"),
                    objects=raw.get("objects"),
                    memory_frames=size,
                )
            )
    return found


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


def _padded_area(probs: torch.Tensor, padding_px: int) -> float:
    """Mean over objects of the frame fraction its box covers once padded by φ (clipped)."""
    _, objects, height, width = probs.shape
    areas = []
    for o in range(objects):
        rows = probs[0, o].amax(dim=1).nonzero().flatten()
        cols = probs[0, o].amax(dim=0).nonzero().flatten()
        box_h = min(height, int(rows[-1] - rows[0]) + 1 + 2 * padding_px)
        box_w = min(width, int(cols[-1] - cols[0]) + 1 + 2 * padding_px)
        areas.append(box_h * box_w / (height * width))
    return sum(areas) / len(areas)


def _flow(height: int, width: int, flow_range: float, device) -> torch.Tensor:
    """Backward flow ``[1, 2, H, W]`` whose components run linearly from −range/2 at the
    top-left to +range/2 at the bottom-right (a zoom): motion whose spread over the frame is
    ``flow_range`` pixels, as a camera's and an object's motions together have."""
    ramp_y = torch.linspace(-0.5, 0.5, height, device=device).view(height, 1)
    ramp_x = torch.linspace(-0.5, 0.5, width, device=device).view(1, width)
    field = (ramp_y + ramp_x) / 2 * flow_range  # [H, W], from -range/2 to +range/2
    return field.expand(2, height, width).unsqueeze(0).contiguous()


def _frame(
    index: int, spec, height: int, width: int, device, flow_range: float = 0.0
) -> FrameFeatures:
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
        flow=_flow(height, width, flow_range, device) if spec.needs_flow else None,
    )


def _values(spec, objects: int, height: int, width: int, device) -> dict[str, torch.Tensor]:
    channels = {"res4": spec.value_channels, **spec.fine_value_channels}
    return {
        scale: torch.randn(
            1, objects, c, height // STRIDES[scale], width // STRIDES[scale], device=device
        )
        for scale, c in channels.items()
    }


def measure(variant: Variant, args, device: torch.device, config_dirs=()) -> Record:
    overrides = [
        f"model={variant.model}",
        f"model/size={args.model_size}",
        *variant.overrides,
        *search_path_override(config_dirs),
    ]
    cfg = compose_config("train", overrides)
    reader = instantiate(cfg.model.reader).to(device).eval()
    spec = reader.needs
    height, width = args.height, args.width
    objects = variant.objects or args.objects
    frames = variant.memory_frames or args.memory_frames
    # φ as the reader is built here (it depends on model/size, so it is read from this config,
    # not from the variant list's default-size one)
    padding_px = 16 * int((cfg.model.get("bench") or {}).get("region_padding_cells") or 0)
    probs = _object_boxes(objects, height, width, args.region_area, padding_px).to(device)
    if variant.part is None:
        call = reader.read
    elif variant.part in reader.parts():
        call = reader.parts()[variant.part]
    else:
        raise ValueError(
            f"model={variant.model}: bench variant {variant.label} times part "
            f"{variant.part!r}, which {type(reader).__name__}.parts() does not name"
        )
    total = frames + (1 if spec.previous_frame_apart else 0)
    memory, state = MemoryBank(), reader.new_state(previous_probs=probs)
    with torch.inference_mode():
        for t in range(total):
            if t > 0:  # the frame joining memory is read first, as in a video
                call(_frame(t, spec, height, width, device, args.flow_range), memory, state)
            memorised = _frame(t, spec, height, width, device, args.flow_range)
            values = _values(spec, objects, height, width, device)
            extras = reader.memorize(memorised, values, memory, object_probs=probs)
            memory.add(t, memorised.keys, values, permanent=t == 0, extras=extras)
        query = _frame(total, spec, height, width, device, args.flow_range)
        saved = copy.deepcopy(state)
        current = [state]

        def restore() -> None:
            current[0] = copy.deepcopy(saved)

        ms, peak = time_calls(
            lambda: call(query, memory, current[0]), args.repeats, device, setup=restore
        )
    grid = (height // 16, width // 16)
    return Record(
        name=f"reader/{variant.label}",
        setting={
            "input": f"{height}x{width}",
            "res4": f"{grid[0]}x{grid[1]}",
            "T": frames,
            "objects": objects,
            "region_area": args.region_area,
            "padded_region_area": round(_padded_area(probs, padding_px), 4),
            **({"flow_range": args.flow_range} if spec.needs_flow else {}),
            "size": args.model_size,
            "part": variant.part or "read",
            "Ck": spec.key_scales["res4"],
            "Cv": spec.value_channels,
            "device": str(device),
        },
        ms=ms,
        peak_mb=peak,
    )


def run(args) -> list[Record]:
    torch.manual_seed(0)
    device = torch.device(args.device)
    config_dirs = args.config_dir or []
    models = args.model or [
        name for name in group_options("model", config_dirs) if variants_of(name, config_dirs)
    ]
    variants = [v for model in models for v in variants_of(model, config_dirs)]
    if args.variants:
        known = {v.label for v in variants}
        unknown = [label for label in args.variants if label not in known]
        if unknown:
            raise ValueError(f"unknown reader variants {unknown}; choose from {sorted(known)}")
        variants = [v for v in variants if v.label in args.variants]
    records = {v.label: measure(v, args, device, config_dirs) for v in variants}
    for variant in variants:
        baseline = records.get(variant.baseline) if variant.baseline else None
        if baseline is not None:
            record = records[variant.label]
            record.extra["baseline"] = variant.baseline
            record.extra["speedup_vs_baseline"] = baseline.ms / record.ms
            record.extra["added_ms_vs_baseline"] = record.ms - baseline.ms
    return list(records.values())


def add_arguments(parser) -> None:
    parser.add_argument(
        "--model",
        nargs="+",
        help="model configs whose bench variants to time (default: every model config with "
        "a bench section)",
    )
    parser.add_argument("--variants", nargs="+", help="only these variant labels")
    parser.add_argument(
        "--config-dir",
        action="append",
        help="an extra config folder (holding model/<name>.yaml), as hydra.searchpath adds",
    )
    parser.add_argument(
        "--model-size", default="paper", help="model/size: paper (Ck 128, Cv 512) | tiny"
    )
    parser.add_argument("--memory-frames", type=int, default=5)
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--region-area", type=float, default=0.2)
    parser.add_argument(
        "--flow-range",
        type=float,
        default=0.0,
        help="for readers that warp by the flow (RMNet): the flow's spread over the frame in "
        "pixels (0: no motion; RMNet's query box warps a window that grows with it)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--height", type=int, default=480, help="input height (480p padded)")
    parser.add_argument("--width", type=int, default=864, help="input width (854 padded to 864)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
