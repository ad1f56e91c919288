"""``python -m vos.eval``: segment every video of a split with a trained checkpoint.

The network is rebuilt from the configs stored in the checkpoint; `inference.*` keys given
here override the stored inference settings, and `+model.<key>=...` overrides the stored model
config for inference-time ablations with the same weights (a reader switch such as
``+model.reader.query_region_mode=previous``, or another flow network with
``+model/flow=tinyflownet model.flow.weights=PATH``). Only keys the stored config has can be
overridden, apart from ``model.flow``, which is replaced whole. Predictions are palette PNGs at the original
size, ``<output_dir>/<video>/<frame>.png``; they are scored by the same function as
``python -m vos.evaluate`` (read back from disk), so both report identical numbers.

Splits without ground truth for every frame are not scored. Those an evaluation server
scores (YouTube-VOS valid/test, DAVIS test-dev: `VideoSource.submission_folder`) are written
in the server's layout (YouTube-VOS: ``<output_dir>/Annotations/<video>/<frame>.png``, for the
frames the server expects, `VideoSource.output_frames`) and zipped into
``<output_dir>/submission.zip``, ready to upload.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import hydra
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from rich.progress import Progress

from vos.config import CONFIG_DIR
from vos.data.davis import write_prediction
from vos.data.source import VideoSource
from vos.evaluate import score_predictions
from vos.inference import InferenceEngine
from vos.metrics import format_results, write_results
from vos.model.module import VOSModule


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available")
    return torch.device(name)


def _check_model_overrides(stored: Mapping, overrides: Mapping, prefix: str = "model") -> None:
    for key, value in overrides.items():
        path = f"{prefix}.{key}"
        if path == "model.flow":
            continue  # a flow network is chosen whole (`+model/flow=NAME`)
        if key not in stored:
            raise ValueError(
                f"{path} is not in the checkpoint's model config; its keys there are "
                f"{sorted(stored)}"
            )
        if isinstance(value, Mapping):
            if not isinstance(stored[key], Mapping):
                raise ValueError(f"{path} is a value in the checkpoint's model config, not a group")
            _check_model_overrides(stored[key], value, path)


FLOW_ESTIMATOR_PREFIX = "network.flow_estimator."


def load_engine(
    ckpt_path: str | Path,
    device: torch.device,
    overrides: dict | None = None,
    model_overrides: Mapping | None = None,
) -> InferenceEngine:
    """The inference engine of a trained checkpoint, with inference settings (``overrides``)
    and model config keys (``model_overrides``, nested) overridden."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path does not exist: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # truncated or not a torch file: torch raises several kinds
        raise ValueError(f"cannot read checkpoint {path}: {error}") from error
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams or "model" not in hparams or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a vos training checkpoint (no model config stored in it)")
    stored_model = OmegaConf.to_container(OmegaConf.create(hparams["model"]))
    model_overrides = dict(model_overrides or {})
    _check_model_overrides(stored_model, model_overrides)
    model = OmegaConf.to_container(OmegaConf.merge(stored_model, model_overrides))
    state = checkpoint["state_dict"]
    if "flow" in model_overrides:
        # the flow network comes from model.flow.weights, not from the checkpoint
        state = {k: v for k, v in state.items() if not k.startswith(FLOW_ESTIMATOR_PREFIX)}
    # the checkpoint holds the trained weights: the backbone files it started from are not needed
    model["backbone"] = {**model["backbone"], "weights": None}
    model["value_backbone"] = {**model["value_backbone"], "weights": None}
    module = VOSModule(**{**hparams, "model": model})
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(FLOW_ESTIMATOR_PREFIX)]
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit the model config (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}): a model override may change the network's weights"
        )
    module.to(device)
    settings = dict(module.hparams.inference)
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    network = module.network.to(device).eval()
    return InferenceEngine(network, **settings)


def has_full_ground_truth(source: VideoSource, videos: list[str]) -> bool:
    return all(len(source.info(v).annotated) == source.info(v).num_frames for v in videos)


def prediction_folder(source: VideoSource, output_dir: Path) -> Path:
    """Where `segment_split` writes ``<video>/<frame>.png``: the output folder, or its
    submission folder for a split an evaluation server scores."""
    return output_dir / (source.submission_folder or "")


def segment_split(
    engine: InferenceEngine, source: VideoSource, output_dir: Path, videos: list[str]
) -> None:
    """Segment each video and write the predictions of its `VideoSource.output_frames` to
    `prediction_folder`."""
    folder = prediction_folder(source, output_dir)
    with Progress() as progress:
        task = progress.add_task("segmenting", total=len(videos))
        for video in videos:
            names = source.info(video).frame_names
            wanted = set(source.output_frames(video))
            written: set[int] = set()

            def save(t: int, labels, video=video, names=names, wanted=wanted, written=written):
                if t in wanted:
                    write_prediction(folder, video, names[t], labels)
                    written.add(t)

            result = engine.run_video(source, video, on_frame=save)
            # frames before any object appears are not passed to on_frame: write them empty
            for t in sorted(wanted - written):
                write_prediction(folder, video, names[t], result.labels[t])
            progress.advance(task)


def write_submission_zip(source: VideoSource, output_dir: Path, videos: list[str]) -> Path:
    """``<output_dir>/submission.zip`` holding the predictions `segment_split` wrote, with the
    paths the server expects (``Annotations/<video>/<frame>.png`` for YouTube-VOS,
    ``<video>/<frame>.png`` for DAVIS test-dev) and nothing else."""
    folder = prediction_folder(source, output_dir)
    zip_path = output_dir / "submission.zip"
    tmp = zip_path.with_name(f".{zip_path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for video in videos:
            names = source.info(video).frame_names
            for t in source.output_frames(video):
                path = folder / video / f"{names[t]}.png"
                archive.write(path, path.relative_to(output_dir).as_posix())
    tmp.replace(zip_path)
    return zip_path


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
    segment_split(engine, source, output_dir, videos)
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
    try:
        evaluate_checkpoint(cfg)
    except (ValueError, FileNotFoundError, InstantiationException) as error:
        # input problems (files, config): DatasetError and ImageReadError are ValueErrors
        raise SystemExit(f"vos.eval: error: {error}") from error


if __name__ == "__main__":
    main()
