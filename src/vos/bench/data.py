"""Training-loader throughput: clips/s of the training DataLoader with N worker processes.

The loader is the one `python -m vos.train` builds (`VOSDataModule.train_dataloader`, the
train config's ``data.clip`` with ``--crop``), images decoded and clips augmented in the
worker processes. By default it reads a small generated dataset written to a temporary DAVIS
layout (``--videos`` x ``--frames`` JPEG frames and PNG masks at ``--height`` x ``--width``),
so decoding is timed as with real data; ``--dataset NAME`` and ``--overrides KEY=VALUE ...``
(train-config overrides) point it at a real root, e.g.
``--dataset davis2017 --overrides dataset.root=/data/DAVIS`` or
``--dataset static --overrides 'dataset.roots=[/data/ECSSD]'``.

Every video's info is read once before timing (what a long run's workers hold after the
first clips), reported as ``data/index``. Per worker count: ``first_batch_s`` (worker start
and the first batch), then, after one batch per worker, ``--batches`` batches timed: ``ms``
per batch (mean) and ``clips_per_s``.
``peak_mb`` is the main process's resident-set growth (the workers are other processes).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from vos.bench.common import Record
from vos.profiling import RssSampler

GENERATED = "generated"


def write_generated_root(root: Path, videos: int, frames: int, height: int, width: int) -> None:
    """Generated training videos in the DAVIS 2017 layout (train split only, no flow)."""
    from vos.data.palette import write_frame, write_mask
    from vos.data.sources.davis import DavisLayout
    from vos.data.synthetic import SyntheticSource, dataset_config_defaults

    layout = DavisLayout(root)
    scene = dataset_config_defaults()["scene"]
    source = SyntheticSource(
        "train", videos, frames, seed=0, height=height, width=width, scene=scene
    )
    for video in source.videos():
        for t, name in enumerate(source.info(video).frame_names):
            write_frame(layout.frame_path(video, name), source.read_frame(video, t))
            write_mask(layout.mask_path(video, name), source.read_mask(video, t))
    layout.image_set("train").parent.mkdir(parents=True, exist_ok=True)
    layout.image_set("train").write_text("".join(f"{video}\n" for video in source.videos()))


def _compose(args, root: Path | None):
    from vos.config import compose_config

    if args.dataset == GENERATED:
        # generated objects may join after the first frame
        overrides = ["dataset=davis2017", f"dataset.root={root}", "dataset.late_objects=true"]
    else:
        overrides = [f"dataset={args.dataset}"]
    overrides += list(args.overrides or [])
    overrides += [
        f"data.clip.crop=[{args.crop[0]},{args.crop[1]}]",
        f"data.clip.num_frames={args.num_frames}",
    ]
    if args.sampling:
        overrides.append(f"data.clip.sampling={args.sampling}")
    elif args.dataset == "static":
        overrides.append("data.clip.sampling=static")
    return compose_config("train", overrides)


def _time_loader(source, cfg, args, workers: int) -> Record:
    from vos.lightning.datamodule import VOSDataModule

    module = VOSDataModule(
        source,
        None,
        batch_size=args.batch_size,
        num_workers=workers,
        total_steps=args.batches + max(1, workers),
        clip=cfg.data.clip,
        seed=cfg.seed,
    )
    with RssSampler() as sampler:
        started = time.perf_counter()
        loader = module.train_dataloader()
        batches = iter(loader)
        next(batches)
        first = time.perf_counter() - started
        # the workers start together: let them reach their steady state (one batch each)
        for _ in range(max(1, workers) - 1):
            next(batches)
        started = time.perf_counter()
        for _ in range(args.batches):
            next(batches)
        elapsed = time.perf_counter() - started
        del batches, loader  # stops the workers
    clip = cfg.data.clip
    setting = {
        "dataset": args.dataset,
        "workers": workers,
        "batch": args.batch_size,
        "crop": f"{clip.crop[0]}x{clip.crop[1]}",
        "frames": clip.num_frames,
        "sampling": clip.sampling,
    }
    return Record(
        f"data/workers{workers}",
        setting,
        elapsed * 1000 / args.batches,
        sampler.peak_growth_mb,
        extra={
            "clips_per_s": args.batches * args.batch_size / elapsed,
            "first_batch_s": first,
        },
    )


def run(args) -> list[Record]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from vos.data.palette import ImageReadError
    from vos.data.source import DatasetError

    try:
        return _run(args)
    except (DatasetError, ImageReadError, HydraException, OmegaConfBaseException) as error:
        # a root or override that does not fit: one line, as vos.train reports it
        raise SystemExit(f"vos.bench data: error: {error}") from error


def _run(args) -> list[Record]:
    import hydra

    with tempfile.TemporaryDirectory(prefix="vos-bench-data-") as folder:
        root = None
        if args.dataset == GENERATED:
            root = Path(folder)
            write_generated_root(root, args.videos, args.frames, args.height, args.width)
        cfg = _compose(args, root)
        source = hydra.utils.instantiate(cfg.dataset.train)
        started = time.perf_counter()
        videos = source.videos()
        for video in videos:
            source.info(video)
        index_s = time.perf_counter() - started
        records = [
            Record(
                "data/index",
                {"dataset": args.dataset, "videos": len(videos)},
                index_s * 1000 / max(len(videos), 1),
                0.0,
                extra={"index_s": index_s},
            )
        ]
        records += [_time_loader(source, cfg, args, workers) for workers in args.workers]
    return records


def add_arguments(parser) -> None:
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--batch-size", type=int, default=4, help="clips per batch")
    parser.add_argument("--batches", type=int, default=40, help="batches timed per setting")
    parser.add_argument("--crop", type=int, nargs=2, default=[384, 384], metavar=("H", "W"))
    parser.add_argument("--num-frames", type=int, default=3, help="frames per clip")
    parser.add_argument(
        "--sampling",
        default=None,
        help="data.clip.sampling (default: the config's; static for --dataset static)",
    )
    parser.add_argument(
        "--dataset",
        default=GENERATED,
        help=f"a conf/dataset name, or {GENERATED!r}: generated videos written as JPEG/PNG files",
    )
    parser.add_argument(
        "--overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="train-config overrides, e.g. dataset.root=/data/DAVIS",
    )
    parser.add_argument("--videos", type=int, default=4, help="generated videos")
    parser.add_argument("--frames", type=int, default=24, help="frames per generated video")
    parser.add_argument("--height", type=int, default=480, help="generated frame height")
    parser.add_argument("--width", type=int, default=854, help="generated frame width")
