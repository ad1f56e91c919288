"""``python -m vos.eval``: segment every video of a split with a trained checkpoint.

The network is rebuilt from the configs stored in the checkpoint; `inference.*` keys given
here override the stored inference settings, and `+model.<key>=...` overrides the stored model
config for inference-time ablations with the same weights (a reader switch such as
``+model.reader.query_region_mode=previous``, or another flow network with
``+model/flow=tinyflownet model.flow.weights=PATH``). Only keys the stored config has can be
overridden, apart from ``model.flow``, which is replaced whole. Predictions are palette PNGs
at the original size, ``<output_dir>/<video>/<frame>.png``; they are scored by the same
function as ``python -m vos.evaluate`` (read back from disk), so both report identical numbers.

Splits without ground truth for every frame are not scored. Those an evaluation server
scores (YouTube-VOS valid/test, DAVIS test-dev: `VideoSource.submission_folder`) are written
in the server's layout (YouTube-VOS: ``<output_dir>/Annotations/<video>/<frame>.png``, for the
frames the server expects, `VideoSource.output_frames`) and zipped into
``<output_dir>/submission.zip``, ready to upload.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from rich.progress import Progress

from vos.cli.errors import reported_as_one_line
from vos.config import CONFIG_DIR
from vos.inference.loading import load_engine
from vos.inference.predictions import (
    has_full_ground_truth,
    prediction_folder,
    segment_split,
    write_submission_zip,
)
from vos.metrics import format_results, write_results
from vos.metrics.scoring import score_predictions


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available")
    return torch.device(name)


def evaluate_checkpoint(cfg: DictConfig) -> None:
    output_dir = Path(hydra.utils.to_absolute_path(str(cfg.output_dir)))
    engine = load_engine(
        hydra.utils.to_absolute_path(str(cfg.ckpt_path)),
        pick_device(cfg.device),
        dict(cfg.inference),
        OmegaConf.to_container(cfg.model, resolve=True) if cfg.get("model") else None,
    )
    source = hydra.utils.instantiate(cfg.dataset.eval)
    if source is None:
        raise ValueError(
            f"dataset={cfg.dataset.name} has no videos to segment (dataset.eval is null); "
            "pick a video dataset, e.g. dataset=davis2017 dataset.root=..."
        )
    videos = source.videos()[: cfg.max_videos] if cfg.max_videos else source.videos()
    with Progress() as progress:
        task = progress.add_task("segmenting", total=len(videos))
        segment_split(engine, source, output_dir, videos, on_video=lambda _: progress.advance(task))
    print(f"wrote predictions for {len(videos)} videos to {prediction_folder(source, output_dir)}")
    if source.submission_folder is not None:
        print(f"wrote {write_submission_zip(source, output_dir, videos)} (ready to upload)")
    score = cfg.score
    if score == "auto":
        score = has_full_ground_truth(source, videos)
    if score:
        metric = score_predictions(source, prediction_folder(source, output_dir), videos)
        write_results(output_dir, metric)
        print(format_results(metric, title=str(cfg.dataset.split)))


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    with reported_as_one_line("vos.eval"):
        evaluate_checkpoint(cfg)
