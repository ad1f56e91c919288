"""Per-frame inference time, memory-read share and peak memory early and late in a long video.

With the memory cap on, the figures at frame 300 should match those at frame 30: the bank
stops growing once it holds ``max_memory_frames`` frames.

``--model stm hmmn`` times several readers on the same video (same backbone and size): the
records of each model after the first are named ``inference/<model>/...``, and
``inference/<model>_vs_<first>`` gives the per-frame time ratio at the last ``--at`` frame.

``--precision 16-mixed|bf16-mixed`` runs the network under autocast, as ``vos.eval
precision=...`` does (memory reads stay fp32); each record's setting names the precision.
"""

from __future__ import annotations

import statistics
import time

import torch

from vos.bench.common import Record
from vos.config import compose_config
from vos.data.synthetic import SyntheticSource
from vos.inference.engine import InferenceEngine
from vos.inference.loading import load_engine
from vos.inference.precision import AUTOCAST_DTYPES
from vos.model.network import build_network
from vos.profiling import FramePeakMemory


def run(args) -> list[Record]:
    models = args.model if isinstance(args.model, list) else [args.model]
    records = []
    for position, model in enumerate(models):
        prefix = "inference" if position == 0 else f"inference/{model}"
        for record in run_model(args, model):
            record.name = record.name.replace("inference", prefix, 1)
            records.append(record)
    first = models[0]
    for model in models[1:]:
        base = next(r for r in records if r.name == "inference/late_vs_early")
        other = next(r for r in records if r.name == f"inference/{model}/late_vs_early")
        records.append(
            Record(
                name=f"inference/{model}_vs_{first}",
                setting={**other.setting, "frame": args.at[-1]},
                ms=other.ms,
                peak_mb=other.peak_mb,
                extra={"time_ratio": other.ms / max(base.ms, 1e-9)},
            )
        )
    return records


def run_model(args, model: str) -> list[Record]:
    torch.manual_seed(0)
    device = torch.device(args.device)
    overrides = [f"model={model}", f"model/size={args.model_size}"]
    cfg = compose_config("train", overrides)
    if args.ckpt:
        engine = load_engine(args.ckpt, device, precision=args.precision)
    else:
        network = build_network(cfg.model).to(device).eval()
        engine = InferenceEngine(network, **cfg.inference, precision=args.precision)
    engine = engine.with_policy(
        max_memory_frames=None if args.max_memory_frames < 0 else args.max_memory_frames,
        mem_every=args.mem_every,
    )
    frames_needed = max(max(args.at) + args.window + 1, 30)  # val videos are >= 30 frames
    source = SyntheticSource(
        "val",
        1,
        frames_needed,
        seed=args.seed,
        height=args.height,
        width=args.width,
        scene=cfg.dataset.scene,
    )
    video = source.videos()[0]
    for t in range(frames_needed):  # render before timing: data generation is not inference
        source.read_frame(video, t)
        source.read_mask(video, t)

    probe = FramePeakMemory(device)
    frame_peak_mb: dict[int, float] = {}
    windows = {at: range(max(1, at - args.window), at + args.window + 1) for at in args.at}

    def on_frame(t: int, labels) -> None:
        frame_peak_mb[t] = probe()

    start = time.perf_counter()
    result = engine.run_video(source, video, on_frame=on_frame)
    total = time.perf_counter() - start
    setting = {
        "model": model,
        "size": args.model_size,
        "backbone": f"resnet{cfg.model.backbone.depth}",
        "resolution": f"{args.height}x{args.width}",
        "mem_every": engine.policy.mem_every,
        "max_memory_frames": engine.policy.max_memory_frames,
        "device": str(device),
        "precision": engine.precision,
        "threads": torch.get_num_threads(),
    }
    records = []
    for at, window in windows.items():
        frame_ms = [1000 * result.frame_seconds[t] for t in window]
        read_ms = [1000 * result.read_seconds[t] for t in window]
        records.append(
            Record(
                name=f"inference/frame{at}",
                setting={**setting, "frame": at, "repeats": len(window)},
                ms=statistics.median(frame_ms),
                peak_mb=max(frame_peak_mb.get(t, 0.0) for t in window),
                extra={
                    "read_ms": statistics.median(read_ms),
                    "read_share": statistics.median(read_ms)
                    / max(statistics.median(frame_ms), 1e-9),
                    "memory_frames": result.memory_frames[at],
                },
            )
        )
    late, early = records[-1], records[0]
    records.append(
        Record(
            name="inference/late_vs_early",
            setting={**setting, "early": args.at[0], "late": args.at[-1]},
            ms=late.ms,
            peak_mb=late.peak_mb,
            extra={
                "time_ratio": late.ms / max(early.ms, 1e-9),
                "peak_mb_growth": late.peak_mb - early.peak_mb,
                "video_seconds": total,
            },
        )
    )
    return records


def add_arguments(parser) -> None:
    parser.add_argument("--model", nargs="+", default=["stm"], help="one or more model configs")
    parser.add_argument("--model-size", default="tiny", help="model/size group: tiny | paper")
    parser.add_argument(
        "--ckpt", default=None, help="a trained checkpoint instead of random weights"
    )
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=432)
    parser.add_argument("--at", type=int, nargs="+", default=[30, 300], help="frames to report")
    parser.add_argument("--window", type=int, default=4, help="frames each side of --at (repeats)")
    parser.add_argument("--mem-every", type=int, default=5)
    parser.add_argument("--max-memory-frames", type=int, default=10, help="-1: unbounded")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--precision",
        default="32",
        choices=list(AUTOCAST_DTYPES),
        help="32: fp32; 16-mixed / bf16-mixed: the network under autocast (memory reads fp32)",
    )
