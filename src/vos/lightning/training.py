"""One training run from a composed config: `train` (a VOS model, ``python -m vos.train``) and
`train_flow` (a flow network on its own task, ``python -m vos.train_flow``) share `fit`.

A run writes into its folder: ``checkpoints/`` (every ``checkpoint.every_n_steps`` and
``last.ckpt``), ``metrics.json`` (the last validation's scores, ``params_m``,
``global_step``, ``fit_s``; see `vos.cli.train`) and the logger's files.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

from vos.checkpoint import CheckpointError, read_training_checkpoint
from vos.config import instantiate
from vos.files import write_json_atomic
from vos.lightning.callbacks import ReaderSchedule, StepProgressBar
from vos.lightning.dashboard import ValidationDashboard
from vos.lightning.datamodule import FlowDataModule, VOSDataModule
from vos.lightning.flow_module import FlowModule
from vos.lightning.loggers import build_logger, finish_logger, log_summary, sweep_identity
from vos.lightning.module import VOSModule


def resolve_path(path: str | None, key: str) -> Path | None:
    """A user-given path (relative to the launch folder), which must name a file."""
    if path is None:
        return None
    resolved = Path(hydra.utils.to_absolute_path(str(path)))
    if not resolved.is_file():
        raise FileNotFoundError(f"{key} does not exist: {resolved}")
    return resolved


def load_initial_weights(module: pl.LightningModule, path: Path) -> None:
    """``init_weights``: another run's network weights (a previous training stage). Every
    tensor must fit: a stage changes the data and the optimiser, not the network."""
    state = read_training_checkpoint(path, "init_weights")
    try:
        module.load_state_dict(state["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(
            f"init_weights {path} does not fit this model: {str(error).splitlines()[0]}"
        ) from error


def _start(cfg: DictConfig) -> tuple[Path | None, Any, Any, Any]:
    """What every run starts from: the checkpoint it resumes (if any), its strategy, the seed,
    and the dataset's training and evaluation sources."""
    ckpt_path = resolve_path(cfg.ckpt_path, "ckpt_path")
    strategy = instantiate(cfg.strategy)
    pl.seed_everything(cfg.seed, workers=True)
    train_source = hydra.utils.instantiate(cfg.dataset.train)
    eval_source = hydra.utils.instantiate(cfg.dataset.eval)
    return ckpt_path, strategy, train_source, eval_source


def train(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Train ``cfg.model`` on ``cfg.dataset`` (the ``train`` config)."""
    ckpt_path, strategy, train_source, eval_source = _start(cfg)
    module = VOSModule(
        model=cfg.model,
        optim=cfg.optim,
        lr_schedule=cfg.lr_schedule,
        loss=cfg.loss,
        inference=cfg.inference,
    )
    network = module.network
    datamodule = VOSDataModule(
        train_source,
        eval_source,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        total_steps=cfg.trainer.max_steps,
        clip=cfg.data.clip,
        seed=cfg.seed,
        val_videos=cfg.data.val_videos,
        # flow from the data (oracle); a flow network estimates it in the training step
        with_flow=network.reader.needs.needs_flow and network.flow_is_oracle,
    )
    if ckpt_path is None and cfg.get("init_weights"):
        load_initial_weights(module, resolve_path(cfg.init_weights, "init_weights"))
    callbacks: list[pl.Callback] = []
    if cfg.model.get("schedule"):
        callbacks.append(ReaderSchedule(OmegaConf.to_container(cfg.model.schedule, resolve=True)))
    validate = eval_source is not None
    if eval_source is None:
        # dataset.eval=null (e.g. static-image pre-training, which has no videos)
        print("vos.train: dataset.eval is null; training without validation")
    elif eval_source.submission_folder is not None:
        # a split scored by a server (YouTube-VOS valid, DAVIS test-dev) has no masks to score
        print(
            f"vos.train: dataset.split={cfg.dataset.split!r} has no ground truth to validate on; "
            "training without validation (use a split with masks, e.g. DAVIS val, to validate)"
        )
        validate = False
    return fit(cfg, module, datamodule, run_dir, strategy, ckpt_path, callbacks, validate)


def train_flow(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Train a flow network with L1 against the dataset's ground-truth flow, validated by
    end-point error (the ``train_flow`` config)."""
    ckpt_path, strategy, train_source, eval_source = _start(cfg)
    module = FlowModule(
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        lr_schedule=OmegaConf.to_container(cfg.lr_schedule, resolve=True),
    )
    datamodule = FlowDataModule(
        train_source,
        eval_source,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        total_steps=cfg.trainer.max_steps,
        seed=cfg.seed,
        crop=cfg.data.crop,
        val_pairs=cfg.data.val_pairs,
        max_skip=cfg.data.max_skip,
    )
    return fit(cfg, module, datamodule, run_dir, strategy, ckpt_path, [], eval_source is not None)


def fit(
    cfg: DictConfig,
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    run_dir: Path,
    strategy: Any,
    ckpt_path: Path | None,
    callbacks: list[pl.Callback],
    validate: bool,
) -> dict[str, float]:
    """Fit ``module`` (resuming from ``ckpt_path``), then write ``metrics.json``."""
    if ckpt_path is not None:
        # the data position: the resumed loader continues with the next clip
        datamodule.start_step = int(read_training_checkpoint(ckpt_path)["global_step"])
    # a multirun job: the sweep's wandb group and a name from the overrides it varies
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    group, name = sweep_identity(hydra_cfg, cfg.run_name, cfg.logger.get("group"))
    logger = build_logger(cfg.logger, run_dir, name, cfg, group=group)
    if type(logger).__name__ == "WandbLogger" and isinstance(module, VOSModule):
        # the run's page: a per-video table, mask overlays and peak memory per validation
        module.dashboard = ValidationDashboard.from_config(cfg.logger)
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="step{step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=cfg.checkpoint.every_n_steps,
        save_top_k=cfg.checkpoint.keep,
        save_last=True,
    )
    callbacks = [checkpoints, StepProgressBar(), *callbacks]
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer_options = OmegaConf.to_container(cfg.trainer, resolve=True)
    if not validate:
        trainer_options["limit_val_batches"] = 0
    trainer = pl.Trainer(
        **trainer_options,
        strategy=strategy,
        # the data modules shard their own loaders by rank (a resumable training sampler,
        # a padded DistributedSampler for validation videos): Lightning must not add its own
        use_distributed_sampler=False,
        logger=logger,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
    )
    started = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        metrics["global_step"] = trainer.global_step
        last = run_dir / "checkpoints" / "last.ckpt"
        if trainer.global_step == 0 and last.is_file():
            # spawned processes trained (strategy=ddp_spawn): this one's trainer is at step 0
            metrics["global_step"] = int(read_training_checkpoint(last)["global_step"])
        metrics["params_m"] = sum(p.numel() for p in module.parameters()) / 1e6
        if metrics.get("val/ms_per_frame"):
            metrics["val/fps"] = 1000.0 / metrics["val/ms_per_frame"]
        metrics["fit_s"] = time.perf_counter() - started  # training and its validations
        if trainer.is_global_zero:
            write_json_atomic(run_dir / "metrics.json", metrics)
            log_summary(logger, metrics)
    finally:
        finish_logger(logger)
    return metrics
