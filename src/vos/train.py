"""``python -m vos.train``: train a model on a dataset (Hydra main; Lightning loop).

Writes into the Hydra run folder: ``.hydra/config.yaml`` (the resolved config),
``checkpoints/`` (every ``checkpoint.every_n_steps`` and ``last.ckpt``, written atomically),
``metrics.json`` (the last validation scores: J&F, J, F and their recall and decay, J&F per
video factor ``val/J&F-Mean/<factor>``, ``val/ms_per_frame`` and ``val/fps``,
``val/read_ms_per_frame``, and under ``logger=wandb`` ``val/peak_memory_mb``; ``params_m``,
``global_step``, ``fit_s``) and the logger's files (under wandb also a per-video table and
mask overlays per validation: `vos.dashboard`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy, Strategy

from vos.config import CONFIG_DIR
from vos.dashboard import ValidationDashboard
from vos.data.datamodule import FlowDataModule, VOSDataModule
from vos.data.palette import ImageReadError
from vos.data.source import DatasetError
from vos.logging_setup import build_logger, finish_logger, log_summary, sweep_identity
from vos.model.flow import FlowModule
from vos.model.module import VOSModule
from vos.model.schedule import ReaderSchedule


class CheckpointError(ValueError):
    """ckpt_path names a file that is not a usable training checkpoint."""


class StrategyError(ValueError):
    """The `strategy=` config cannot run: an unknown name, a missing package, or devices
    that do not suit it."""


# Errors about the user's input (files, config): reported in one line, without a traceback.
INPUT_ERRORS = (
    DatasetError,
    ImageReadError,
    FileNotFoundError,
    CheckpointError,
    StrategyError,
    InstantiationException,
)

STRATEGIES = ("single", "ddp", "ddp_spawn", "fsdp", "deepspeed")


def _device_count(devices: Any) -> int | None:
    """The number of devices ``trainer.devices`` asks for, or None when Lightning decides
    (``auto``, ``-1``)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        devices = devices.strip()
        if "," in devices:
            return len([d for d in devices.split(",") if d.strip()])
        if not devices.lstrip("-").isdigit():
            return None
        devices = int(devices)
    return None if devices == -1 else int(devices)


def build_strategy(strategy: DictConfig, trainer: DictConfig) -> str | Strategy:
    """The Lightning strategy of ``strategy=``: its ``name`` and the options beside it."""
    options = dict(OmegaConf.to_container(strategy, resolve=True))
    name = options.pop("name", None)
    if name == "single":
        devices = _device_count(trainer.get("devices", 1))
        if devices != 1 or trainer.get("num_nodes", 1) != 1:
            raise StrategyError(
                f"strategy=single runs one process on one device, but trainer.devices="
                f"{trainer.get('devices')} and trainer.num_nodes={trainer.get('num_nodes')}: "
                "use strategy=ddp for several devices"
            )
        return "auto"  # Lightning's single-device strategy on trainer.accelerator's device
    if name in ("ddp", "ddp_spawn"):
        if name == "ddp_spawn":
            options.setdefault("start_method", "spawn")
        return DDPStrategy(**options)
    if name == "fsdp":
        if trainer.get("accelerator") == "cpu":
            raise StrategyError(
                "strategy=fsdp needs GPUs (trainer=gpu), not trainer.accelerator=cpu: "
                "use strategy=ddp on the CPU"
            )
        return FSDPStrategy(**options)
    if name == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise StrategyError(
                "strategy=deepspeed needs the deepspeed package, which is not installed "
                "(pip install deepspeed)"
            )
        from pytorch_lightning.strategies import DeepSpeedStrategy

        return DeepSpeedStrategy(**options)
    raise StrategyError(f"unknown strategy.name {name!r}; expected one of {', '.join(STRATEGIES)}")


def checkpoint_step(path: Path) -> int:
    """The global step stored in a Lightning checkpoint (to resume the data position)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # truncated or not a torch file: torch raises several kinds
        raise CheckpointError(f"cannot read checkpoint {path} (ckpt_path): {error}") from error
    if not isinstance(state, dict) or "global_step" not in state:
        raise CheckpointError(f"{path} is not a Lightning training checkpoint (ckpt_path)")
    return int(state["global_step"])


def resolve_checkpoint(path: str | None, key: str = "ckpt_path") -> Path | None:
    if path is None:
        return None
    resolved = Path(hydra.utils.to_absolute_path(str(path)))
    if not resolved.is_file():
        raise FileNotFoundError(f"{key} does not exist: {resolved}")
    return resolved


def load_initial_weights(module: pl.LightningModule, path: Path) -> None:
    """``init_weights``: another run's network weights (a previous training stage). Every
    tensor must fit: a stage changes the data and the optimiser, not the network."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise CheckpointError(f"cannot read checkpoint {path} (init_weights): {error}") from error
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(f"{path} is not a training checkpoint (init_weights)")
    try:
        module.load_state_dict(state["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(
            f"init_weights {path} does not fit this model: {str(error).splitlines()[0]}"
        ) from error


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def train(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    ckpt_path = resolve_checkpoint(cfg.ckpt_path)
    strategy = build_strategy(cfg.strategy, cfg.trainer)
    pl.seed_everything(cfg.seed, workers=True)
    train_source = hydra.utils.instantiate(cfg.dataset.train)
    eval_source = hydra.utils.instantiate(cfg.dataset.eval)
    if cfg.model.get("task", "vos") == "flow":
        # a flow network trained on its own task (RMNet's TinyFlowNet): L1 against the
        # dataset's ground-truth flow, validated by end-point error
        module = FlowModule(lr=cfg.model.lr, weight_decay=cfg.model.weight_decay)
        datamodule = FlowDataModule(
            train_source,
            eval_source,
            batch_size=cfg.data.batch_size,
            num_workers=cfg.data.num_workers,
            total_steps=cfg.trainer.max_steps,
            seed=cfg.seed,
            crop=cfg.model.crop,
            val_pairs=cfg.model.val_pairs,
            max_skip=cfg.model.max_skip,
        )
    else:
        module = VOSModule(model=cfg.model, optim=cfg.optim, loss=cfg.loss, inference=cfg.inference)
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
            with_flow=module.network.reader.needs.needs_flow
            and module.network.flow_name == "oracle",
        )
    if ckpt_path is not None:
        datamodule.start_step = checkpoint_step(ckpt_path)
    elif cfg.get("init_weights"):
        load_initial_weights(module, resolve_checkpoint(cfg.init_weights, "init_weights"))

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
    callbacks = [checkpoints, RichProgressBar()]
    if cfg.model.get("schedule"):
        callbacks.append(ReaderSchedule(OmegaConf.to_container(cfg.model.schedule, resolve=True)))
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer_options = OmegaConf.to_container(cfg.trainer, resolve=True)
    if eval_source is None:
        # dataset.eval=null (e.g. static-image pre-training, which has no videos)
        print("vos.train: dataset.eval is null; training without validation")
        trainer_options["limit_val_batches"] = 0
    elif eval_source.submission_folder is not None and not isinstance(module, FlowModule):
        # a split scored by a server (YouTube-VOS valid, DAVIS test-dev) has no masks to score
        print(
            f"vos.train: dataset.split={cfg.dataset.split!r} has no ground truth to validate on; "
            "training without validation (use a split with masks, e.g. DAVIS val, to validate)"
        )
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
        if cfg.strategy.name == "ddp_spawn" and last.is_file():
            # the spawned processes trained: this process's trainer still stands at step 0
            metrics["global_step"] = checkpoint_step(last)
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


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = train(cfg, run_dir)
    except INPUT_ERRORS as error:
        raise SystemExit(f"vos.train: error: {error}") from error
    return metrics.get("val/J&F-Mean")


if __name__ == "__main__":
    main()
