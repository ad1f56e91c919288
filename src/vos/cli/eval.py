"""``python -m vos.eval``: segment every video of a split with a trained checkpoint.

The network is rebuilt from the configs stored in the checkpoint; `inference.*` keys given
here override the stored inference settings, and `+model.<key>=...` overrides the stored model
config for inference-time ablations with the same weights (a reader switch such as
``+model.reader.query_region_mode=previous``, or another flow network with
``+model/flow=tinyflownet model.flow.weights=PATH``). Only keys the stored config has can be
overridden, apart from ``model.flow``, which is replaced whole. Predictions are palette PNGs
at the original size, ``<output_dir>/<video>/<frame>.png``; they are scored by the same
function as ``python -m vos.evaluate`` (read back from disk), so both report identical numbers.

``precision=32|16-mixed|bf16-mixed`` (Lightning's names; default 32, whatever the checkpoint was
trained with) runs the network under autocast for the mixed modes; memory reads stay fp32. The
precision is printed before segmenting and in the results' title; the result folder keeps
DAVIS's layout (predictions and its two CSVs, plus ``factors.json``: each video's known
factors, for ``experiments/compare_evals.py --factor``), so the printed log is the record of it.

Splits without ground truth for every frame are not scored. Those an evaluation server
scores (YouTube-VOS valid/test, DAVIS test-dev: `VideoSource.submission_folder`) are written
in the server's layout (YouTube-VOS: ``<output_dir>/Annotations/<video>/<frame>.png``, for the
frames the server expects, `VideoSource.output_frames`) and zipped into
``<output_dir>/submission.zip``, ready to upload.
"""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from rich.progress import Progress

from vos.cli.errors import hydra_command, reported_as_one_line
from vos.config import CONFIG_DIR, instantiate
from vos.files import check_output_folder, staged_folder
from vos.inference.loading import load_engine
from vos.inference.precision import describe_precision, parse_precision, slow_cpu_bf16_note
from vos.inference.predictions import (
    has_full_ground_truth,
    missing_ground_truth,
    prediction_folder,
    segment_split,
    write_submission_zip,
)
from vos.metrics import format_results, write_factors, write_results
from vos.metrics.scoring import score_predictions


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available")
    return torch.device(name)


def evaluate_checkpoint(cfg: DictConfig) -> None:
    source = instantiate(cfg.dataset.eval)
    if source is None:
        raise ValueError(
            f"dataset={cfg.dataset.name} has no videos to segment (dataset.eval is null); "
            "pick a video dataset, e.g. dataset=davis2017 dataset.root=..."
        )
    # everything that needs only the files and the config is checked before any segmenting
    output_dir = check_output_folder(
        hydra.utils.to_absolute_path(str(cfg.output_dir)),
        "output_dir",
        source.folders(),
        bool(cfg.overwrite),
    )
    precision = parse_precision(cfg.precision, "precision")
    if cfg.max_videos is not None and int(cfg.max_videos) < 1:
        raise ValueError(f"max_videos={cfg.max_videos}: expected 1 or more, or null for all")
    videos = source.videos()[: cfg.max_videos] if cfg.max_videos else source.videos()
    for video in videos:  # layouts, first masks, late objects, sizes
        source.info(video)
    engine = load_engine(
        hydra.utils.to_absolute_path(str(cfg.ckpt_path)),
        pick_device(cfg.device),
        dict(cfg.inference),
        OmegaConf.to_container(cfg.model, resolve=True) if cfg.get("model") else None,
        trusted_targets=list(cfg.trusted_targets),
        precision=precision,
    )
    print(describe_precision(engine.precision, engine.device))
    note = slow_cpu_bf16_note(engine.precision, engine.device)
    if note:
        print(f"vos.eval: {note}")
    score = cfg.score
    if score == "auto":
        score = has_full_ground_truth(source, videos)
        if not score:
            print(f"not scoring: {missing_ground_truth(source, videos)}")
    with staged_folder(output_dir) as staging:
        with Progress() as progress:
            task = progress.add_task("segmenting", total=len(videos))
            segment_split(
                engine, source, staging, videos, on_video=lambda _: progress.advance(task)
            )
        if source.submission_folder is not None:
            write_submission_zip(source, staging, videos)
        metric = None
        if score:
            metric = score_predictions(source, prediction_folder(source, staging), videos)
            write_results(staging, metric)
            write_factors(staging, metric)
    print(f"wrote predictions for {len(videos)} videos to {prediction_folder(source, output_dir)}")
    if source.submission_folder is not None:
        print(f"wrote {output_dir / 'submission.zip'} (ready to upload)")
    if metric is not None:
        print(format_results(metric, title=f"{cfg.dataset.split} at precision={engine.precision}"))


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def _main(cfg: DictConfig) -> None:
    with reported_as_one_line("vos.eval"):
        evaluate_checkpoint(cfg)


main = hydra_command("vos.eval", "eval", _main)
