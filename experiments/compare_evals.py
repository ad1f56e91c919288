"""J&F (or J, F: ``--score``) of `vos.eval` output folders, each with its bootstrap interval, and each against the first
with an interval paired by video: ``python experiments/compare_evals.py BASE OTHER [OTHER ...]``.

A row may hold several seeds of one config, scored on the same videos: ``[NAME=]DIR,DIR,...``
(e.g. ``stm=OUT/stm_s0,OUT/stm_s1``). Its scores are then a ``[seeds, videos]`` matrix and the
intervals resample seeds as well as videos (`vos.results.intervals`), so they include the
seed-to-seed spread that a single checkpoint per row cannot show.

`vos.report` reads training runs (their last validation); this reads what ``python -m vos.eval
... output_dir=OUT`` wrote, ``OUT/per-sequence_results.csv`` (one row per object: J-Mean,
F-Mean), for checkpoints scored on more videos than their training validated (e.g.
``dataset.eval.num_videos=96``). A video's score is the mean of its objects' (J + F) / 2 and
weighs as many objects as it holds, so the mean is DAVIS's J&F over objects; the intervals
resample videos, and the seeds of a row that has several, as `vos.results.intervals` does (a
row of one checkpoint shows no seed-to-seed spread).

``--factor distractors`` keeps the videos with that factor (``--factor no_distractors`` those
without), read from the first row's first folder's ``factors.json`` (written by `vos.eval`) or from
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


def parse_row(text: str) -> tuple[str, list[Path]]:
    """``[NAME=]DIR[,DIR...]``: a row's label (NAME, or its first folder's name) and its seeds'
    folders. An existing folder is one folder whatever its name holds (Hydra's run folders
    may hold ``=`` and ``,``)."""
    if Path(text).is_dir():
        return Path(text).name, [Path(text)]
    name, separator, folders = text.partition("=")
    if not separator or "/" in name or "," in name:
        name, folders = "", text
    paths = [Path(folder) for folder in folders.split(",") if folder]
    if not paths:
        raise SystemExit(f"{text!r} names no folder")
    return name or paths[0].name, paths


def row_scores(
    label: str, folders: list[Path], score: str, keep: set[str] | None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(video names, ``scores[seeds, videos]``, objects per video) of one row, its seeds
    scored on the same videos with the same objects."""
    names, scores, objects = select(*video_scores(folders[0], score), keep)
    rows = [scores]
    for folder in folders[1:]:
        other_names, other, other_objects = select(*video_scores(folder, score), keep)
        if other_names != names or not np.array_equal(other_objects, objects):
            raise SystemExit(
                f"row {label}: {folder} and {folders[0]} were not scored on the same videos and "
                "objects; a row's seeds must share its val set"
            )
        rows.append(other)
    return names, np.stack(rows), objects


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "rows", nargs="+", help="vos.eval output folders; [NAME=]DIR,DIR,... for a row of seeds"
    )
    parser.add_argument("--score", choices=sorted(SCORES), default="J&F")
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--factor", help="only videos with it (no_<factor>: without)")
    parser.add_argument("--factors", type=Path, help="factors file (default: FIRST/factors.json)")
    args = parser.parse_args(argv)
    rows = [parse_row(text) for text in args.rows]
    base_label, base_folders = rows[0]
    keep = None
    if args.factor:
        keep = factor_videos(args.factors or base_folders[0] / "factors.json", args.factor)
    base_names, base, _ = row_scores(base_label, base_folders, args.score, keep)
    if not base_names:
        raise SystemExit(f"no video of {base_folders[0]} has --factor {args.factor}")
    percent = f"{100 * args.level:g}%"
    label = f"{args.score} ({args.factor})" if args.factor else args.score
    print(f"| row | seeds | {label} | {percent} CI | videos | objects | Δ vs {base_label} |")
    print("|---|---|---|---|---|---|---|")
    marked = False
    for index, (name, folders) in enumerate(rows):
        names, scores, objects = row_scores(name, folders, args.score, keep)
        own = mean_interval(scores, args.level, args.resamples, objects)
        delta = "baseline"
        if index > 0:
            diff = paired_difference(
                scores, base, names, base_names, (name, base_label),
                args.level, args.resamples, objects,
            )  # fmt: skip
            if diff.low is None:  # a single video: nothing to resample
                delta = f"{diff.value:+.3f} (no interval)"
            else:
                mark = "" if diff.distinguishable else "≈ "
                marked = marked or not diff.distinguishable
                delta = f"{mark}{diff.value:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]"
        spread = "no interval" if own.low is None else f"[{own.low:.3f}, {own.high:.3f}]"
        print(
            f"| {name} | {len(folders)} | {own.value:.3f} | {spread} | "
            f"{len(names)} | {int(objects.sum())} | {delta} |"
        )
    if marked:
        print(f"\n≈: the {percent} interval of the difference includes 0 (not distinguishable).")
    if any(len(folders) > 1 for _, folders in rows):
        print("Rows of several seeds resample seeds and videos; one-seed rows, videos only.")


if __name__ == "__main__":
    main()
