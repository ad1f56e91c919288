"""Training runs on disk: every folder holding a ``metrics.json`` (written by ``vos.train`` at
the end of a run) is a run, described by the command-line overrides it was started with
(``.hydra/overrides.yaml``). Runs whose overrides differ only by ``seed`` are one group: one
config trained with several seeds, one row of a table."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

IGNORED_OVERRIDES = ("logger", "run_name", "hydra.", "trainer.devices", "data.num_workers")
SEED = "seed"  # the training seed (conf/train.yaml); dataset.seed changes the data, not this
SCORE = "val/J&F-Mean"


@dataclass
class Run:
    folder: Path
    metrics: dict  # metrics.json: "val/..." scalars, params_m, ... and "per_video" rows
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def per_video(self) -> list[dict] | None:
        """The last validation's rows (``video``, ``objects``, ``J&F-Mean``, ...), or None in
        a metrics.json written before they were stored."""
        rows = self.metrics.get("per_video")
        return rows if rows else None


@dataclass
class GroupScores:
    """A group's J&F as ``scores[seeds, videos]``: per video (``videos`` names the columns,
    ``objects`` counts each video's objects) or, when a run lacks per-video rows, the runs'
    J&F as one column (``videos`` and ``objects`` None). ``run_level[seeds, 1]``: each run's
    J&F, either way."""

    scores: np.ndarray
    videos: list[str] | None
    objects: np.ndarray | None
    run_level: np.ndarray


@dataclass
class RunGroup:
    """Runs of one config that differ only by their seed."""

    runs: list[Run]
    overrides: dict[str, str]  # the runs' shared overrides, without the seed

    @property
    def folder(self) -> Path:
        """The run's folder, or the folder holding every run of the group."""
        if len(self.runs) == 1:
            return self.runs[0].folder
        return Path(os.path.commonpath([run.folder for run in self.runs]))

    def mean(self, key: str) -> float | None:
        """The mean of a metric over the runs that hold it (None if none does)."""
        values = [float(run.metrics[key]) for run in self.runs if run.metrics.get(key) is not None]
        return float(np.mean(values)) if values else None

    def scores(self, label: str) -> GroupScores | None:
        """The J&F of the runs that hold one (None if none does); ``label`` names the group in
        errors."""
        scored = [run for run in self.runs if run.metrics.get(SCORE) is not None]
        if not scored:
            return None
        run_level = np.array([[float(run.metrics[SCORE])] for run in scored])
        if any(run.per_video is None for run in scored):
            return GroupScores(run_level, None, None, run_level)
        first = scored[0].per_video
        videos = [str(row["video"]) for row in first]
        rows = []
        for run in scored:
            by_video = {str(row["video"]): row for row in run.per_video}
            if sorted(by_video) != sorted(videos) or len(by_video) != len(run.per_video):
                raise ValueError(
                    f"{label}: {scored[0].folder} and {run.folder} were validated on "
                    "different videos; their seeds cannot be pooled"
                )
            rows.append([float(by_video[video]["J&F-Mean"]) for video in videos])
        objects = np.array([float(row.get("objects", 1)) for row in first])
        return GroupScores(np.array(rows), videos, objects, run_level)


def _parse_overrides(lines: Iterable[str]) -> dict[str, str]:
    parsed = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        key = key.lstrip("+~")
        if not key.startswith(IGNORED_OVERRIDES):
            parsed[key] = value
    return parsed


def find_runs(roots: Iterable[str | Path]) -> list[Run]:
    runs = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"no such run folder: {root}")
        for metrics_file in sorted(root.rglob("metrics.json")):
            try:
                metrics = json.loads(metrics_file.read_text())
            except json.JSONDecodeError as error:
                raise ValueError(f"{metrics_file} is not valid JSON: {error}") from error
            overrides_file = metrics_file.parent / ".hydra" / "overrides.yaml"
            overrides = {}
            if overrides_file.is_file():
                overrides = _parse_overrides(yaml.safe_load(overrides_file.read_text()) or [])
            runs.append(Run(metrics_file.parent, metrics, overrides))
    if not runs:
        raise FileNotFoundError(
            f"no metrics.json below {', '.join(str(r) for r in roots)}: not a vos.train run folder"
        )
    return runs


def group_by_seed(runs: Iterable[Run]) -> list[RunGroup]:
    """Runs whose overrides are equal but for ``seed`` as one group each, in the order of
    their first run."""
    groups: dict[tuple, RunGroup] = {}
    for run in runs:
        shared = {k: v for k, v in run.overrides.items() if k != SEED}
        key = tuple(sorted(shared.items()))
        if key in groups:
            groups[key].runs.append(run)
        else:
            groups[key] = RunGroup([run], shared)
    return list(groups.values())


def row_labels(rows: Sequence[Run | RunGroup]) -> list[str]:
    """The overrides that differ between rows (all of them for a single row), never the
    seed: the seeds of a group are its samples, not its name."""
    overrides = [{k: v for k, v in row.overrides.items() if k != SEED} for row in rows]
    keys = sorted({k for shown in overrides for k in shown})
    varying = [k for k in keys if len({shown.get(k) for shown in overrides}) > 1]
    shown_keys = varying or keys
    labels = []
    for row, shown in zip(rows, overrides):
        parts = [f"{k}={shown[k]}" for k in shown_keys if k in shown]
        labels.append(", ".join(parts) or row.folder.name)
    return labels
