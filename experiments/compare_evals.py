"""J&F (or J, F: ``--score``) of `vos.eval` output folders, each with its bootstrap interval, and each against the first
with an interval paired by video: ``python experiments/compare_evals.py BASE OTHER [OTHER ...]``.

`vos.report` reads training runs (their last validation); this reads what ``python -m vos.eval
... output_dir=OUT`` wrote, ``OUT/per-sequence_results.csv`` (one row per object: J-Mean,
F-Mean), for checkpoints scored on more videos than their training validated (e.g.
``dataset.eval.num_videos=96``). A video's score is the mean of its objects' (J + F) / 2 and
weighs as many objects as it holds, so the mean is DAVIS's J&F over objects; the intervals
resample videos (one checkpoint each: no seed-to-seed spread), as `vos.results.intervals` does.

``--factor distractors`` keeps the videos with that factor (``--factor no_distractors`` those
without), read from the first folder's ``factors.json`` (written by `vos.eval`) or from
``--factors FILE`` (the same ``{video: {factor: bool}}`` format, e.g. a DAVIS-layout root's);
the means are then `vos.eval`'s ``J&F-Mean/<factor>`` rows, with intervals.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from vos.results.intervals import mean_interval, paired_difference

SCORES = {
    "J&F": lambda row: (float(row["J-Mean"]) + float(row["F-Mean"])) / 2,
    "J": lambda row: float(row["J-Mean"]),
    "F": lambda row: float(row["F-Mean"]),
}


def video_scores(folder: Path, score: str = "J&F") -> tuple[list[str], np.ndarray, np.ndarray]:
    """(video names, ``score`` per video, objects per video) from ``per-sequence_results.csv``."""
    path = folder / "per-sequence_results.csv"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: pass folders written by vos.eval output_dir=")
    per_video: dict[str, list[float]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            video = row["Sequence"].rsplit("_", 1)[0]  # <video>_<object id>
            per_video.setdefault(video, []).append(SCORES[score](row))
    names = sorted(per_video)
    scores = np.array([np.mean(per_video[v]) for v in names])
    objects = np.array([len(per_video[v]) for v in names], dtype=float)
    return names, scores, objects


def factor_videos(path: Path, factor: str) -> set[str]:
    """The videos of ``path`` (``{video: {factor: bool}}``) with ``factor`` true, or with it
    false for ``no_<factor>``; videos that do not mention it are in neither."""
    if not path.is_file():
        raise SystemExit(
            f"{path} does not exist: --factor needs the factors vos.eval writes (rerun it) "
            "or --factors FILE"
        )
    try:
        factors = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SystemExit(f"{path} is not valid JSON: {error}") from error
    if not isinstance(factors, dict) or not all(isinstance(v, dict) for v in factors.values()):
        raise SystemExit(f"{path} must map each video to {{factor: true/false}}")
    wanted = not factor.startswith("no_")
    name = factor.removeprefix("no_")
    known = {factor_name for video_factors in factors.values() for factor_name in video_factors}
    if name not in known:
        raise SystemExit(f"--factor {factor}: {path} knows the factors {sorted(known)}")
    return {video for video, video_factors in factors.items() if video_factors.get(name) is wanted}


def select(
    names: list[str], scores: np.ndarray, objects: np.ndarray, keep: set[str] | None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    if keep is None:
        return names, scores, objects
    index = [i for i, name in enumerate(names) if name in keep]
    return [names[i] for i in index], scores[index], objects[index]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="vos.eval output folders")
    parser.add_argument("--score", choices=sorted(SCORES), default="J&F")
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--factor", help="only videos with it (no_<factor>: without)")
    parser.add_argument("--factors", type=Path, help="factors file (default: FIRST/factors.json)")
    args = parser.parse_args(argv)
    keep = None
    if args.factor:
        keep = factor_videos(args.factors or args.folders[0] / "factors.json", args.factor)
    base_names, base, _ = select(*video_scores(args.folders[0], args.score), keep)
    if not base_names:
        raise SystemExit(f"no video of {args.folders[0]} has --factor {args.factor}")
    percent = f"{100 * args.level:g}%"
    label = f"{args.score} ({args.factor})" if args.factor else args.score
    print(f"| folder | {label} | {percent} CI | videos | objects | Δ vs {args.folders[0].name} |")
    print("|---|---|---|---|---|---|")
    for folder in args.folders:
        names, scores, objects = select(*video_scores(folder, args.score), keep)
        own = mean_interval(scores[None], args.level, args.resamples, objects)
        delta = "baseline"
        if folder != args.folders[0]:
            diff = paired_difference(
                scores[None], base[None], names, base_names, (folder.name, args.folders[0].name),
                args.level, args.resamples, objects,
            )  # fmt: skip
            if diff.low is None:  # a single video: nothing to resample
                delta = f"{diff.value:+.3f} (no interval)"
            else:
                mark = "" if diff.distinguishable else "≈ "
                delta = f"{mark}{diff.value:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]"
        spread = "no interval" if own.low is None else f"[{own.low:.3f}, {own.high:.3f}]"
        print(
            f"| {folder.name} | {own.value:.3f} | {spread} | "
            f"{len(names)} | {int(objects.sum())} | {delta} |"
        )
    print(f"\n≈: the {percent} interval of the difference includes 0 (not distinguishable).")


if __name__ == "__main__":
    main()
