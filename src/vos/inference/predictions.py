"""Segmenting a whole split and writing what a benchmark expects: palette PNGs at the original
size, ``<folder>/<video>/<frame>.png``, and for a split an evaluation server scores
(YouTube-VOS valid/test, DAVIS test-dev: `VideoSource.submission_folder`) the zip it takes."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

from vos.data.source import VideoSource
from vos.data.sources.davis import write_prediction
from vos.files import atomic_path
from vos.inference.engine import InferenceEngine


def has_full_ground_truth(source: VideoSource, videos: list[str]) -> bool:
    return all(len(source.info(v).annotated) == source.info(v).num_frames for v in videos)


def missing_ground_truth(source: VideoSource, videos: list[str]) -> str:
    """Why a split is not scored: the first video with frames that have no mask."""
    for video in videos:
        info = source.info(video)
        missing = sorted(set(range(info.num_frames)) - set(info.annotated))
        if missing:
            names = ", ".join(info.frame_names[t] for t in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            return f"video {video!r} has no ground truth for frame(s) {names}{more}"
    return "every frame has ground truth"


def prediction_folder(source: VideoSource, output_dir: Path) -> Path:
    """Where `segment_split` writes ``<video>/<frame>.png``: the output folder, or its
    submission folder for a split an evaluation server scores."""
    return output_dir / (source.submission_folder or "")


def segment_split(
    engine: InferenceEngine,
    source: VideoSource,
    output_dir: Path,
    videos: list[str],
    on_video: Callable[[str], None] | None = None,
) -> None:
    """Segment each video and write the predictions of its `VideoSource.output_frames` to
    `prediction_folder`; ``on_video(name)`` after each video (progress)."""
    folder = prediction_folder(source, output_dir)
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
        if on_video is not None:
            on_video(video)


def write_submission_zip(source: VideoSource, output_dir: Path, videos: list[str]) -> Path:
    """``<output_dir>/submission.zip`` holding the predictions `segment_split` wrote, with the
    paths the server expects (``Annotations/<video>/<frame>.png`` for YouTube-VOS,
    ``<video>/<frame>.png`` for DAVIS test-dev) and nothing else."""
    folder = prediction_folder(source, output_dir)
    zip_path = output_dir / "submission.zip"
    with (
        atomic_path(zip_path) as tmp,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive,
    ):
        for video in videos:
            names = source.info(video).frame_names
            for t in source.output_frames(video):
                path = folder / video / f"{names[t]}.png"
                archive.write(path, path.relative_to(output_dir).as_posix())
    return zip_path
