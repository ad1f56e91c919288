"""Training runs on disk: every folder holding a ``metrics.json`` (written by ``vos.train`` at
the end of a run) is a run, described by the command-line overrides it was started with
(``.hydra/overrides.yaml``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

IGNORED_OVERRIDES = ("logger", "run_name", "hydra.", "trainer.devices", "data.num_workers")


@dataclass
class Run:
    folder: Path
    metrics: dict[str, float]
    overrides: dict[str, str] = field(default_factory=dict)


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


def row_labels(runs: list[Run]) -> list[str]:
    """The overrides that differ between runs (all of them for a single run)."""
    keys = sorted({k for run in runs for k in run.overrides})
    varying = [k for k in keys if len({run.overrides.get(k) for run in runs}) > 1]
    shown = varying or keys
    labels = []
    for run in runs:
        parts = [f"{k}={run.overrides[k]}" for k in shown if k in run.overrides]
        labels.append(", ".join(parts) or run.folder.name)
    return labels
