"""Every experiment= config composes, and each row of its sweep runs a training step."""

import itertools
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import TINY, compose_config
from omegaconf import OmegaConf

from vos.config import CONFIG_DIR
from vos.train import train

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def sweep_rows(name: str) -> list[list[str]]:
    params = OmegaConf.load(CONFIG_DIR / "experiment" / f"{name}.yaml").hydra.sweeper.params
    keys = list(params)
    choices = [str(params[k]).split(",") for k in keys]
    return [[f"{k}={v}" for k, v in zip(keys, row)] for row in itertools.product(*choices)]


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
    overrides = [
        *TINY,
        f"experiment={experiment}",
        *row,
        "trainer.max_steps=1",
        "+trainer.limit_val_batches=0",
    ]
    metrics = train(compose_config("train", overrides), tmp_path)
    assert metrics["global_step"] == 1


def test_experiments_exist():
    assert {"rmnet_table5", "rmnet_table6", "rmnet_table7"} <= set(EXPERIMENTS)
    assert all(
        Path(CONFIG_DIR / "experiment" / f"{name}.yaml")
        .read_text()
        .startswith("# @package _global_")
        for name in EXPERIMENTS
    )
