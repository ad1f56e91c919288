"""The `strategy=` group, and DDP on the CPU: two processes (gloo) train a few steps, split
the validation videos, and report the J&F one process gives on the same weights and videos."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time

import hydra
import pytest
import pytorch_lightning as pl
import torch
from helpers import TINY, compose_config, read_wandb_log, run_train_process
from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy

from vos.config import instantiate
from vos.lightning.datamodule import VOSDataModule
from vos.lightning.module import VOSModule
from vos.lightning.strategies import StrategyError
from vos.lightning.training import train


@pytest.mark.parametrize("name", ["ddp", "ddp_spawn"])
def test_ddp_strategies_pass_their_options(name):
    cfg = compose_config(
        "train", [f"strategy={name}", "strategy.find_unused_parameters=true", "trainer.devices=2"]
    )
    strategy = instantiate(cfg.strategy)
    assert isinstance(strategy, DDPStrategy)
    assert strategy._ddp_kwargs["find_unused_parameters"] is True
    assert strategy._start_method == ("spawn" if name == "ddp_spawn" else "popen")
    assert strategy._process_group_backend is None  # Lightning's: gloo on CPU, nccl on GPU


def test_fsdp_and_single_strategies():
    cfg = compose_config(
        "train", ["strategy=fsdp", "strategy.sharding_strategy=SHARD_GRAD_OP", "trainer=gpu"]
    )
    strategy = instantiate(cfg.strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.sharding_strategy.name == "SHARD_GRAD_OP"
    cfg = compose_config("train", ["strategy=single"])
    assert instantiate(cfg.strategy) == "auto"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.devices=2"], "strategy=single"),
        (["strategy=fsdp"], "strategy=fsdp needs GPUs"),
        (["strategy=deepspeed"], "strategy=deepspeed needs the deepspeed package"),
    ],
)
def test_strategy_errors_name_the_key(tmp_path, overrides, message):
    if "strategy=deepspeed" in overrides and importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed: its missing-package error does not apply")
    with pytest.raises(StrategyError, match=message):
        train(compose_config("train", [*TINY, *overrides]), tmp_path)


# Run as the training command of every rank (Lightning re-runs it for rank 1): records what
# each rank trained on, validated and returned, into $RANK_RECORDS. Test-only instrumentation.
RECORDING_TRAIN = """
import json, os
from pathlib import Path

from pytorch_lightning.utilities import rank_zero_only

import vos.cli.train
from vos.lightning import training
from vos.lightning.module import VOSModule

record = {"videos": [], "train_indices": None}
validation_step = VOSModule.validation_step


def recording_validation_step(self, video, batch_idx):
    record["videos"].append(video)
    return validation_step(self, video, batch_idx)


def on_train_start(self):
    record["sampler"] = type(self.trainer.train_dataloader.sampler).__name__
    record["train_indices"] = list(self.trainer.train_dataloader.sampler)


VOSModule.validation_step = recording_validation_step
VOSModule.on_train_start = on_train_start
train = training.train


def recording_train(cfg, run_dir):
    metrics = train(cfg, run_dir)
    record["metrics"] = metrics
    path = Path(os.environ["RANK_RECORDS"]) / f"rank{rank_zero_only.rank}.json"
    path.write_text(json.dumps(record))
    return metrics


training.train = recording_train
vos.cli.train.main()
"""

VALIDATION = [
    "dataset.eval.num_videos=3",  # odd: the second rank's share is padded with a repeat
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
]


def test_ddp_on_cpu_matches_one_process(tmp_path):
    run_dir, records = tmp_path / "run", tmp_path / "ranks"
    records.mkdir()
    script = tmp_path / "recording_train.py"
    script.write_text(textwrap.dedent(RECORDING_TRAIN))
    overrides = [*[o for o in TINY if not o.startswith("logger=")], *VALIDATION]
    command = [
        sys.executable,
        str(script),
        *overrides,
        "logger=csv",
        "strategy=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "RANK_RECORDS": str(records), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    ddp_seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-4000:]

    rank0, rank1 = (json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1))
    # training: each rank its own half of the clips (the resumable sampler, not Lightning's)
    assert rank0["sampler"] == rank1["sampler"] == "ResumableSampler"
    assert set(rank0["train_indices"]).isdisjoint(rank1["train_indices"])
    assert sorted(rank0["train_indices"] + rank1["train_indices"]) == list(range(8))
    # validation: the three videos split across the ranks (two each, one repeated)
    source = hydra.utils.instantiate(compose_config("train", overrides).dataset.eval)
    videos = source.videos()
    assert len(videos) == 3
    assert len(rank0["videos"]) == len(rank1["videos"]) == 2
    assert set(rank0["videos"]) | set(rank1["videos"]) == set(videos)
    assert rank0["videos"] != rank1["videos"]
    # every rank holds the same full scores
    for key, value in rank0["metrics"].items():
        if key.startswith("val/J") or key.startswith("val/F"):
            assert rank1["metrics"][key] == value, key
    assert rank0["metrics"]["global_step"] == rank1["metrics"]["global_step"] == 2

    # one run: one metrics.json, one config, one logger folder with one validation row
    assert list(run_dir.rglob("metrics.json")) == [run_dir / "metrics.json"]
    assert len(list(run_dir.rglob("config.yaml"))) == 1
    assert [p.name for p in run_dir.rglob("metrics.csv")] == ["metrics.csv"]
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("val/J&F-Mean")
    logged = [row.split(",")[column] for row in rows[1:] if row.split(",")[column]]
    ddp_score = json.loads((run_dir / "metrics.json").read_text())["val/J&F-Mean"]
    assert [float(v) for v in logged] == [pytest.approx(ddp_score, abs=1e-6)]
    assert ddp_score == rank0["metrics"]["val/J&F-Mean"]

    # one process, the DDP run's final weights (validation ran after its last step), same videos
    cfg = compose_config("train", overrides)
    module = VOSModule.load_from_checkpoint(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu"
    )
    datamodule = VOSDataModule(
        None,
        source,
        batch_size=cfg.data.batch_size,
        num_workers=0,
        total_steps=cfg.trainer.max_steps,
        clip=cfg.data.clip,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    # the ranks ran with one thread each (OMP_NUM_THREADS=1): so does this process, since a
    # convolution's sum order, and with it a pixel on a decision boundary, depends on threads
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = trainer.validate(module, datamodule=datamodule, verbose=False)
    finally:
        torch.set_num_threads(threads)
    single_score = results[0]["val/J&F-Mean"]
    print(
        f"\nJ&F-Mean: DDP (2 CPU processes, gloo) {ddp_score:.10f}, one process "
        f"{single_score:.10f} (difference {abs(ddp_score - single_score):.1e}); "
        f"DDP run {ddp_seconds:.1f} s"
    )
    assert abs(ddp_score - single_score) <= 1e-6


@pytest.mark.slow  # 25 s: two ranks train and validate; DDP itself is in the default run above
@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_ddp_on_cpu_logs_one_wandb_run_with_every_ranks_videos(tmp_path):
    """Two ranks, three validation videos, logger=wandb offline: one run, whose table names
    every video and whose overlays include a video that only rank 1 ran."""
    run_dir = tmp_path / "run"
    overrides = [*[o for o in TINY if not o.startswith("logger=")], *VALIDATION]
    overrides += ["trainer.max_steps=1", "trainer.val_check_interval=1"]
    run_train_process(
        [
            *overrides,
            "logger=wandb",
            "logger.mode=offline",
            "strategy=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
        env={"OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
    )
    logs = list(tmp_path.rglob("*.wandb"))
    assert len(logs) == 1 and logs[0].parent.parent == run_dir / "wandb"  # rank 0's run only
    log = read_wandb_log(logs[0])
    videos = hydra.utils.instantiate(compose_config("train", overrides).dataset.eval).videos()
    (media,) = [row for row in log.history if "val/per_sequence" in row]
    (scores,) = [row for row in log.history if "val/J&F-Mean" in row]
    table = json.loads((logs[0].parent / "files" / media["val/per_sequence"]["path"]).read_text())
    # a DistributedSampler deals video 1 to rank 1 alone: its name and frames were gathered
    assert [row[0] for row in table["data"]] == sorted(videos)
    assert {key for key in media if key.startswith("val/masks/")} == {
        f"val/masks/{video}" for video in videos[:2]
    }
    objects = [row[1] for row in table["data"]]
    weighted = sum(row[2] * n for row, n in zip(table["data"], objects)) / sum(objects)
    assert weighted == pytest.approx(scores["val/J&F-Mean"], abs=1e-6)
