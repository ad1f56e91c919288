"""Every experiment= config composes, and each row of its sweep runs a training step."""

import itertools
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import TINY, compose_config
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from vos.config import CONFIG_DIR
from vos.train import train

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def sweep_rows(name: str) -> list[list[str]]:
    """The overrides of every job of the experiment's multirun, parsed as Hydra parses them
    (so list values such as ``[res3,res2]`` stay whole)."""
    params = OmegaConf.load(CONFIG_DIR / "experiment" / f"{name}.yaml").hydra.sweeper.params
    parser = OverridesParser.create()
    choices = []
    for key, value in params.items():
        override = parser.parse_override(f"{key}={value}")
        choices.append([f"{key}={v}" for v in override.sweep_string_iterator()])
    return [list(row) for row in itertools.product(*choices)]


@pytest.fixture
def raft_weights(tmp_path, monkeypatch):
    path = tmp_path / "raft_small.pth"
    torch.save(torchvision.models.optical_flow.raft_small(weights=None).state_dict(), path)
    monkeypatch.setenv("VOS_RAFT_WEIGHTS", str(path))
    return path


@pytest.mark.parametrize(
    ("experiment", "row"),
    [(name, row) for name in EXPERIMENTS for row in sweep_rows(name)],
    ids=lambda value: value if isinstance(value, str) else "+".join(value),
)
def test_every_sweep_row_runs_a_step(experiment, row, tmp_path, raft_weights):
    """One training step, then a validation on one video: several rows (HMMN's kernel, k at
    inference, window, σ; RMNet's flow network) only act at inference."""
    overrides = [
        *TINY,
        f"experiment={experiment}",
        *row,
        "trainer.max_steps=1",
        "trainer.val_check_interval=1",
        "data.val_videos=1",
    ]
    metrics = train(compose_config("train", overrides), tmp_path)
    assert metrics["global_step"] == 1
    assert 0.0 <= metrics["val/J&F-Mean"] <= 1.0


def test_experiments_exist():
    assert {"rmnet_table5", "rmnet_table6", "rmnet_table7"} <= set(EXPERIMENTS)
    assert {"hmmn_table5", *(f"hmmn_table6{t}" for t in "bcdefg")} <= set(EXPERIMENTS)
    assert len(sweep_rows("hmmn_table6e")) == 4  # lists stay whole: [], [res2], [res3], both
    assert all(
        Path(CONFIG_DIR / "experiment" / f"{name}.yaml")
        .read_text()
        .startswith("# @package _global_")
        for name in EXPERIMENTS
    )
