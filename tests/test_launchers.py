"""Launchers and sweepers from Hydra plugins (optional extras): `+cluster=slurm` (submitit,
nothing is submitted here), `hydra/launcher=joblib` and `hparams_search=lmrc_optuna`."""

import importlib.util
import subprocess
import sys

import pytest
import yaml
from helpers import TINY, compose_config
from omegaconf import OmegaConf

from vos.config import CONFIG_DIR


def _plugin(name: str) -> bool:
    try:
        return importlib.util.find_spec(f"hydra_plugins.{name}") is not None
    except ModuleNotFoundError:  # no plugin at all: no hydra_plugins namespace
        return False


needs_submitit = pytest.mark.skipif(
    not _plugin("hydra_submitit_launcher"), reason="hydra-submitit-launcher is not installed"
)
needs_joblib = pytest.mark.skipif(
    not _plugin("hydra_joblib_launcher"), reason="hydra-joblib-launcher is not installed"
)
needs_optuna = pytest.mark.skipif(
    not _plugin("hydra_optuna_sweeper"), reason="hydra-optuna-sweeper is not installed"
)


def _hydra(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


@needs_submitit
def test_slurm_job_is_sized_from_the_trainer():
    cfg = _hydra(
        [
            "+cluster=slurm",
            "trainer=gpu",
            "strategy=ddp",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            "cluster.partition=gpu",
            "cluster.timeout_min=90",
            "experiment=rmnet_table5",
        ]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 4, 4)
    assert (launcher.timeout_min, launcher.partition) == (90, "gpu")
    assert launcher.name == cfg.run_name
    assert cfg.hydra.sweeper.params  # the experiment's table still sweeps: one job per row
    # the launcher's own config accepts every key the cluster file sets
    OmegaConf.to_container(launcher, resolve=True)


@needs_joblib
def test_joblib_launcher_composes():
    cfg = _hydra(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 2


@needs_optuna
def test_optuna_search_space_names_existing_keys():
    cfg = _hydra(["hparams_search=lmrc_optuna"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert str(sweeper.direction) == "maximize"
    assert cfg.model.name == "lmrc"
    params = dict(sweeper.params)
    assert {"optim.lr", "inference.mem_every"} <= set(params)
    assert any(key.startswith("model.reader.") for key in params)
    for key in params:  # a typo would only fail when the first trial starts
        assert OmegaConf.select(cfg, key) is not None, key
    assert compose_config("train", ["hparams_search=lmrc_optuna"]).model.reader.radius


@needs_optuna
def test_optuna_search_runs_trials_and_maximises_val_jf(tmp_path):
    """Two one-step trials; the sweeper reads vos.train's return value (val J&F)."""
    overrides = [o for o in TINY if not o.startswith(("trainer.max_steps", "trainer.val_check"))]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vos.train",
            "-m",
            "hparams_search=lmrc_optuna",
            "hydra.sweeper.n_trials=2",
            *overrides,
            "trainer.max_steps=1",
            "trainer.val_check_interval=1",
            "data.val_videos=1",
            f"hydra.sweep.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert 0.0 <= best["best_value"] <= 1.0
    assert set(best["best_params"]) == set(
        _hydra(["hparams_search=lmrc_optuna"]).hydra.sweeper.params
    )
    assert len(list(tmp_path.glob("*/metrics.json"))) == 2
