"""Training runs on disk: every folder holding a ``metrics.json`` (written by ``vos.train`` at
the end of a run) is a run, described by the command-line overrides it was started with
(``.hydra/overrides.yaml``), the config-group options it was composed with, given or default
(``model=stm``; ``.hydra/hydra.yaml``), and its resolved training seed (``seed`` in
``.hydra/config.yaml``). Runs whose overrides differ only by ``seed`` are one group: one
config trained with several seeds, one row of a table. A group holds one run per seed: of
runs with the same seed (the same config run twice, or ``seed=0`` beside the default seed
0) it keeps the latest (the newest ``metrics.json``) and lists the others in ``duplicates``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

IGNORED_OVERRIDES = (
    "logger",
    "run_name",
    "hydra.",
    "hydra/",
    "trainer.devices",
    "data.num_workers",
)
SEED = "seed"  # the training seed (conf/train.yaml); dataset.seed changes the data, not this
SCORE = "val/J&F-Mean"


@dataclass
class Run:
    folder: Path
    metrics: dict  # metrics.json: "val/..." scalars, params_m, ... and "per_video" rows
    overrides: dict[str, str] = field(default_factory=dict)
    # the training seed the run used: .hydra/config.yaml's, else its seed override; None when
    # neither says (such a run is never taken for another run's duplicate)
    seed: str | None = None
    written: float = 0.0  # when its metrics.json was written (mtime): the latest run wins

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


@dataclass(frozen=True)
class DuplicateSeed:
    """Runs of one config with the same seed: the one a group keeps, and those it leaves out."""

    seed: str
    kept: Run
    left_out: list[Run]


@dataclass
class RunGroup:
    """Runs of one config that differ only by their seed, one run per seed."""

    runs: list[Run]
    overrides: dict[str, str]  # the runs' shared overrides, without the seed
    duplicates: list[DuplicateSeed] = field(default_factory=list)

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


def _group_choices(folder: Path) -> dict[str, str]:
    """The config-group options the run was composed with (``model=stm`` whether given on the
    command line or taken by default), from ``.hydra/hydra.yaml``; none when it is missing.

    With them, a run of the defaults and one that names the same options are one config, and
    a row of defaults is named by its options (``model=stm``) beside rows that chose others."""
    hydra_file = folder / ".hydra" / "hydra.yaml"
    if not hydra_file.is_file():
        return {}
    try:
        choices = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.choices")
    except (OmegaConfBaseException, yaml.YAMLError) as error:
        raise ValueError(f"{hydra_file}: cannot read its config-group choices: {error}") from error
    if choices is None:
        return {}
    return _parse_overrides(
        f"{group}={choice}" for group, choice in choices.items() if choice is not None
    )


def _resolved_seed(folder: Path, overrides: dict[str, str]) -> str | None:
    """The run's training seed: ``seed`` of its ``.hydra/config.yaml`` (which Hydra writes
    unresolved: an interpolation is resolved here), else its ``seed`` override."""
    config = folder / ".hydra" / "config.yaml"
    if config.is_file():
        try:
            seed = OmegaConf.select(OmegaConf.load(config), SEED, default=None)
        except (OmegaConfBaseException, yaml.YAMLError) as error:
            raise ValueError(f"{config}: cannot read its seed: {error}") from error
        if seed is not None:
            return str(seed)
    return overrides.get(SEED)


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
            folder = metrics_file.parent
            for group, choice in _group_choices(folder).items():
                overrides.setdefault(group, choice)
            seed = _resolved_seed(folder, overrides)
            runs.append(Run(folder, metrics, overrides, seed, metrics_file.stat().st_mtime))
    if not runs:
        raise FileNotFoundError(
            f"no metrics.json below {', '.join(str(r) for r in roots)}: not a vos.train run folder"
        )
    return runs


def group_by_seed(runs: Iterable[Run]) -> list[RunGroup]:
    """Runs whose overrides are equal but for ``seed`` as one group each, in the order of
    their first run; of runs with the same seed, the latest only (`DuplicateSeed`)."""
    groups: dict[tuple, RunGroup] = {}
    for run in runs:
        shared = {k: v for k, v in run.overrides.items() if k != SEED}
        key = tuple(sorted(shared.items()))
        if key in groups:
            groups[key].runs.append(run)
        else:
            groups[key] = RunGroup([run], shared)
    for group in groups.values():
        group.runs, group.duplicates = _one_run_per_seed(group.runs)
    return list(groups.values())


def _one_run_per_seed(runs: list[Run]) -> tuple[list[Run], list[DuplicateSeed]]:
    """``runs`` with one run per seed, the latest written (then the last folder by name), in
    their order; and the seeds that had more. Runs of unknown seed are all kept."""
    by_seed: dict[str, list[Run]] = {}
    for run in runs:
        if run.seed is not None:
            by_seed.setdefault(run.seed, []).append(run)
    duplicates = []
    for seed, same in by_seed.items():
        if len(same) > 1:
            kept = max(same, key=lambda run: (run.written, str(run.folder)))
            duplicates.append(DuplicateSeed(seed, kept, [run for run in same if run is not kept]))
    left_out = {id(run) for duplicate in duplicates for run in duplicate.left_out}
    return [run for run in runs if id(run) not in left_out], duplicates


def duplicate_seed_warnings(groups: Sequence[RunGroup]) -> list[str]:
    """A line per seed that a group ran more than once, naming the run folders."""
    lines = []
    for label, group in zip(row_labels(groups), groups):
        for duplicate in group.duplicates:
            left_out = ", ".join(str(run.folder) for run in duplicate.left_out)
            lines.append(
                f"{label}: seed {duplicate.seed} was run {1 + len(duplicate.left_out)} times; "
                f"kept the latest, {duplicate.kept.folder}, and left out {left_out}"
            )
    return lines


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
