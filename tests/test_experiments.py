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
# training recipes in stages (one run each, chained by checkpoint), not sweeps
STAGES = ["lcm_stage1_static", "lcm_stage2_main", "lcm_stage3_sequence"]
SWEEPS = [name for name in EXPERIMENTS if name not in STAGES]


def sweep_rows(name: str) -> list[list[str]]:
    """The overrides of every job of the experiment's multirun, parsed as Hydra parses them
    (so list values such as ``[res3,res2]`` stay whole)."""
    params = OmegaConf.load(CONFIG_DIR / "experiment" / f"{name}.yaml").hydra.sweeper.params
    parser = OverridesParser.create()
    choices = []
    for key, value in params.items():
        override = parser.parse_override(f"{key}={value}")
        if override.is_sweep_override():
            choices.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:  # one value: a single job
            choices.append([f"{key}={override.get_value_element_as_str()}"])
    return [list(row) for row in itertools.product(*choices)]


@pytest.fixture
def raft_weights(tmp_path, monkeypatch):
    path = tmp_path / "raft_small.pth"
    torch.save(torchvision.models.optical_flow.raft_small(weights=None).state_dict(), path)
    monkeypatch.setenv("VOS_RAFT_WEIGHTS", str(path))
    return path


@pytest.mark.parametrize(
    ("experiment", "row"),
    [(name, row) for name in SWEEPS for row in sweep_rows(name)],
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
    assert {"lcm_table4", "lcm_table4_no_grm", *STAGES} <= set(EXPERIMENTS)
    assert {"lmrc_table4", "lmrc_table5a", "lmrc_table5b"} <= set(EXPERIMENTS)
    assert len(sweep_rows("lmrc_table4")) == 6  # settings A-F
    assert len(sweep_rows("hmmn_table6e")) == 4  # lists stay whole: [], [res2], [res3], both
    assert all(
        Path(CONFIG_DIR / "experiment" / f"{name}.yaml")
        .read_text()
        .startswith("# @package _global_")
        for name in EXPERIMENTS
    )


def test_lcm_stages_chain_checkpoints(tmp_path):
    """Stage 2 starts from stage 1's weights and stage 3 from stage 2's, by config alone."""
    metrics = {}
    for seed, stage in enumerate(STAGES):
        overrides = [
            *TINY,
            f"experiment={stage}",
            f"stages_dir={tmp_path}",
            f"seed={seed}",  # a fresh network would differ from the previous stage's
            "trainer.max_steps=1",
            "+trainer.limit_val_batches=0",
        ]
        metrics[stage] = train(
            compose_config("train", overrides), tmp_path / stage.split("_", 1)[1]
        )
    weights = {
        stage: torch.load(
            tmp_path / stage.split("_", 1)[1] / "checkpoints" / "last.ckpt",
            weights_only=False,
        )["state_dict"]
        for stage in STAGES
    }
    assert all(m["global_step"] == 1 for m in metrics.values())
    # one small step from the previous stage's weights (another seed would start elsewhere)
    key = "network.decoder.pred.weight"
    for before, after in zip(STAGES, STAGES[1:]):
        change = (weights[after][key] - weights[before][key]).abs().max()
        assert float(change) < 0.01, (before, after, float(change))
