"""Hydra multiruns: every job writes its metrics.json, vos.report reads the sweep as a table,
and under wandb every job is its own run, in the sweep's group, named by its overrides."""

import importlib.util
import json
import subprocess
import sys

import pytest
import yaml
from helpers import TINY, read_wandb_log, run_train_process
from hydra.types import RunMode
from omegaconf import OmegaConf

from vos.lightning.loggers import sweep_identity
from vos.results.runs import find_runs
from vos.results.tables import markdown_table

HAS_WANDB = importlib.util.find_spec("wandb") is not None
# one step, then a validation on one short video
SWEEP_OVERRIDES = [
    *(o for o in TINY if not o.startswith("logger=")),
    "trainer.max_steps=1",
    "trainer.val_check_interval=1",
    "data.val_videos=1",
]


@pytest.fixture(scope="module")
def two_model_sweep(tmp_path_factory):
    """``-m model=stm,hmmn``: with wandb offline when it is installed, CSV logs otherwise. A
    WANDB_RUN_ID and WANDB_RESUME in the environment must not make the jobs share a run."""
    tmp = tmp_path_factory.mktemp("sweep")
    sweep_dir = tmp / "multirun"
    run_train_process(
        [
            "-m",
            "model=stm,hmmn",
            f"logger={'wandb' if HAS_WANDB else 'csv'}",
            *SWEEP_OVERRIDES,
            f"hydra.sweep.dir={sweep_dir}",
        ],
        tmp,
        env={
            "WANDB_MODE": "offline",
            "WANDB_DIR": str(tmp / "wandb"),
            "WANDB_RUN_ID": "leftoverid",
            "WANDB_RESUME": "allow",
        },
        timeout=600,
    )
    return sweep_dir


def test_multirun_of_two_models_runs_both_and_reports_two_rows(two_model_sweep):
    jobs = sorted(p.name for p in two_model_sweep.iterdir() if p.is_dir())
    assert jobs == ["0-stm-synthetic", "1-hmmn-synthetic"]  # job number and run_name
    for job in jobs:
        metrics = json.loads((two_model_sweep / job / "metrics.json").read_text())
        for key in (
            "val/J&F-Mean",
            "val/J-Mean",
            "val/F-Mean",
            "val/read_ms_per_frame",
            "val/fps",
            "params_m",
            "fit_s",
        ):
            assert key in metrics, (job, key)
        assert any(k.startswith("val/J&F-Mean/") for k in metrics)  # per-factor scores
    result = subprocess.run(
        [sys.executable, "-m", "vos.report", str(two_model_sweep)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    rows = result.stdout.strip().splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == ["| model=stm", "| model=hmmn"]
    assert markdown_table(find_runs([two_model_sweep])).count("\n") == 3


@pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed")
def test_wandb_offline_runs_one_per_job_in_the_sweeps_group(two_model_sweep):
    runs = {}
    for job in ("0-stm-synthetic", "1-hmmn-synthetic"):
        logs = list((two_model_sweep / job / "wandb").glob("offline-run-*/*.wandb"))
        assert len(logs) == 1, job  # one run per job
        log = read_wandb_log(logs[0])
        assert log.run is not None, job
        runs[job] = log.run
        keys = log.keys
        for key in ("train/loss", "val/J&F-Mean", "val/J-Mean", "val/F-Mean"):
            assert key in keys, (job, key)
        assert "val/read_ms_per_frame" in keys and "params_m" in keys and "val/fps" in keys
        assert any(k.startswith("val/J&F-Mean/") for k in keys)
    stm, hmmn = runs["0-stm-synthetic"], runs["1-hmmn-synthetic"]
    assert (stm.display_name, hmmn.display_name) == ("model=stm", "model=hmmn")
    assert stm.run_group == hmmn.run_group == "/".join(two_model_sweep.parts[-2:])
    assert len({stm.run_id, hmmn.run_id, "leftoverid"}) == 3  # never reused nor resumed


def _hydra_node(tmp_path, mode, task, params=None, experiment=None, master_task=None):
    sweep_dir = tmp_path / "2025-01-31" / "12-00-00"
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if master_task is not None:
        master = {"hydra": {"overrides": {"task": master_task, "hydra": []}}}
        (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump(master))
    return OmegaConf.create(
        {
            "mode": mode,
            "sweep": {"dir": str(sweep_dir)},
            "sweeper": {"params": params},
            "runtime": {"choices": {"experiment": experiment}},
            "overrides": {"task": task},
        }
    )


def test_single_run_keeps_run_name_and_group(tmp_path):
    node = _hydra_node(tmp_path, RunMode.RUN, ["model=stm"])
    assert sweep_identity(node, "stm-synthetic", None) == (None, "stm-synthetic")
    assert sweep_identity(None, "stm-synthetic", "mine") == ("mine", "stm-synthetic")


def test_experiment_sweep_is_grouped_by_experiment_and_named_by_its_values(tmp_path):
    params = {"model.reader.memory_region": "false,true", "model.reader.query_region": "true"}
    task = [
        "experiment=rmnet_table5",
        "trainer.max_steps=5",
        "model.reader.memory_region=false",
        "model.reader.query_region=true",
    ]
    node = _hydra_node(tmp_path, RunMode.MULTIRUN, task, params, "rmnet_table5", task[:2])
    group, name = sweep_identity(node, "rmnet-table5-Mfalse-Qtrue", None)
    assert group == "rmnet_table5"
    assert name == "model.reader.memory_region=false,model.reader.query_region=true"
    assert sweep_identity(node, "x", "my-group")[0] == "my-group"


def test_command_line_sweep_is_grouped_by_its_folder(tmp_path):
    master = ["model=stm,lmrc", "optim.lr=1e-3,1e-4", "trainer.max_steps=5", "+cluster=slurm"]
    task = ["model=lmrc", "optim.lr=1e-4", "trainer.max_steps=5", "+cluster=slurm"]
    node = _hydra_node(tmp_path, RunMode.MULTIRUN, task, None, None, master)
    assert sweep_identity(node, "lmrc-synthetic", None) == (
        "2025-01-31/12-00-00",
        "model=lmrc,optim.lr=1e-4",
    )
    # no multirun.yaml (another sweeper) and no params: the run_name
    (tmp_path / "2025-01-31" / "12-00-00" / "multirun.yaml").unlink()
    assert sweep_identity(node, "lmrc-synthetic", None)[1] == "lmrc-synthetic"
