"""One training run from a composed config: `train` (a VOS model, ``python -m vos.train``) and
`train_flow` (a flow network on its own task, ``python -m vos.train_flow``) share `fit`.

A run writes into its folder: ``checkpoints/`` (every ``checkpoint.every_n_steps`` and
``last.ckpt``), ``metrics.json`` (the last validation's scores, ``params_m``,
``global_step``, ``fit_s`` (this attempt's seconds), ``resumed_from_step`` (the step it
started from; 0 from the start), ``commit`` (`vos.provenance.source_commit`: the code this
attempt ran, None outside a git checkout), and ``per_video``: the last validation's rows per
video; with ``dataset.extra_eval``, each extra set's ``extra/<name>/...`` scores and its rows in
``extra_per_video.<name>``; see `vos.cli.train`) and the logger's files.
"""

from __future__ import annotations

import difflib
import inspect
import json
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

from vos.checkpoint import CheckpointError, read_training_checkpoint
from vos.config import instantiate
from vos.data.source import DatasetError
from vos.files import write_json_atomic
from vos.inference.precision import slow_cpu_bf16_note
from vos.lightning.callbacks import FinalCheckpoint, ReaderSchedule, StepProgressBar
from vos.lightning.checkpoint_io import AtomicCheckpointIO
from vos.lightning.dashboard import ValidationDashboard
from vos.lightning.datamodule import FlowDataModule, VOSDataModule
from vos.lightning.extra_eval import PREFIX as EXTRA_PREFIX
from vos.lightning.extra_eval import extra_eval_sets
from vos.lightning.flow_module import FlowModule
from vos.lightning.loggers import build_logger, finish_logger, log_summary, sweep_identity
from vos.lightning.module import VOSModule
from vos.provenance import source_commit


def resolve_path(path: str | None, key: str) -> Path | None:
    """A user-given path (relative to the launch folder), which must name a file."""
    if path is None:
        return None
    resolved = Path(hydra.utils.to_absolute_path(str(path)))
    if not resolved.is_file():
        raise FileNotFoundError(f"{key} does not exist: {resolved}")
    return resolved


class RunFolderError(ValueError):
    """The run folder holds another run's checkpoints."""


def check_run_folder(run_dir: Path, ckpt_path: Path | None, resumed_step: int | None) -> None:
    """A run writes into a folder without checkpoints, or continues the run whose folder it is
    from its newest checkpoint; anything else would put new checkpoints (``last-v1.ckpt``)
    beside stale ones."""
    folder = run_dir / "checkpoints"
    for partial in sorted(folder.glob(".*.ckpt.*.tmp")) if folder.is_dir() else []:
        # written by vos.files.atomic_path when a run was killed during a save: never a checkpoint
        partial.unlink()
        print(f"vos.train: removed {partial}, half of a checkpoint a killed run was writing")
    existing = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    if not existing:
        return
    shown = ", ".join(p.name for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
    if ckpt_path is None or ckpt_path.parent.resolve() != folder.resolve():
        raise RunFolderError(
            f"the run folder {run_dir} already holds checkpoints of an earlier run ({shown}): "
            f"continue that run with ckpt_path={folder / 'last.ckpt'}, or start a new run in "
            "another folder (hydra.run.dir=...)"
        )
    later = [
        p
        for p in existing
        if p.stem.startswith("step")
        and p.stem[4:].split("-")[0].isdigit()
        and int(p.stem[4:].split("-")[0]) > (resumed_step or 0)
    ]
    if later:
        raise RunFolderError(
            f"{later[0]} is later than ckpt_path={ckpt_path} (step {resumed_step}): resuming in "
            "the same folder would leave the new run's checkpoints beside it; resume into "
            "another folder (hydra.run.dir=...)"
        )


def check_run_folder_of(cfg: DictConfig) -> None:
    """`check_run_folder` for a composed config (its ``hydra.run.dir``), before Hydra writes
    its ``.hydra/`` record into that folder."""
    run_dir = Path(str(cfg.hydra.run.dir)).absolute()
    resumed, finished = resume_point(cfg, run_dir)
    if finished is not None:
        return
    ckpt_path = resolve_path(cfg.ckpt_path, "ckpt_path") or resumed
    step = None if ckpt_path is None else int(read_training_checkpoint(ckpt_path)["global_step"])
    check_run_folder(run_dir, ckpt_path, step)


RESUME_MODES = ("never", "auto")


def resume_point(cfg: DictConfig, run_dir: Path) -> tuple[Path | None, dict | None]:
    """What ``resume=auto`` finds in ``run_dir``: (its ``checkpoints/last.ckpt`` to continue
    from, None), or (None, its metrics) when its ``metrics.json`` already reached
    ``trainer.max_steps``, or (None, None). ``resume=never`` and an explicit ``ckpt_path``
    find nothing."""
    mode = cfg.get("resume", "never")
    if mode not in RESUME_MODES:
        raise ValueError(f"resume={mode!r}: expected one of {RESUME_MODES}")
    if mode == "never" or cfg.get("ckpt_path") is not None:
        return None, None
    written = run_dir / "metrics.json"
    if written.is_file():
        try:
            metrics = json.loads(written.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"resume=auto: cannot read {written}: {error}") from error
        if int(metrics.get("global_step", -1)) >= int(cfg.trainer.max_steps):
            return None, metrics
    last = run_dir / "checkpoints" / "last.ckpt"
    return (last if last.is_file() else None), None


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


def check_run_settings(cfg: DictConfig) -> None:
    """Settings that would otherwise fail deep inside Lightning or run something else."""
    accepted = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    ours = {"strategy", "logger", "callbacks", "default_root_dir", "plugins"}
    for key in cfg.trainer:
        if key in ours:
            raise ValueError(
                f"trainer.{key} is set by vos.train itself (choose strategy=, logger=, "
                "hydra.run.dir= instead)"
            )
        if key not in accepted:
            close = difflib.get_close_matches(str(key), sorted(accepted), n=1)
            hint = f" (did you mean trainer.{close[0]}?)" if close else ""
            raise ValueError(f"trainer.{key} is not a Lightning Trainer argument{hint}")
    for key, value, least in (
        ("trainer.max_steps", cfg.trainer.max_steps, 1),
        ("data.batch_size", cfg.data.batch_size, 1),
        ("data.num_workers", cfg.data.num_workers, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{key}={value!r}: expected a whole number >= {least}")


def _start(cfg: DictConfig) -> tuple[Path | None, Any, Any, Any]:
    """What every run starts from: the checkpoint it resumes (if any), its strategy, the seed,
    and the dataset's training and evaluation sources."""
    check_run_settings(cfg)
    ckpt_path = resolve_path(cfg.ckpt_path, "ckpt_path")
    strategy = instantiate(cfg.strategy)
    pl.seed_everything(cfg.seed, workers=True)
    train_source = hydra.utils.instantiate(cfg.dataset.train)
    eval_source = hydra.utils.instantiate(cfg.dataset.eval)
    return ckpt_path, strategy, train_source, eval_source


def check_fits(module: pl.LightningModule, checkpoint: dict, path: Path) -> None:
    """``ckpt_path`` holds weights of this very network (every tensor, every shape)."""
    ours = module.state_dict()
    theirs = checkpoint["state_dict"]
    stored_model = (checkpoint.get("hyper_parameters") or {}).get("model") or {}
    stored = (stored_model.get("reader") or {}).get("_target_", "another network")
    missing = [k for k in ours if k not in theirs]
    unexpected = [k for k in theirs if k not in ours]
    reshaped = [k for k in ours if k in theirs and ours[k].shape != theirs[k].shape]
    if missing or unexpected or reshaped:
        first = (missing or unexpected or reshaped)[0]
        raise CheckpointError(
            f"ckpt_path={path} does not fit this model (it was trained with {stored}; first "
            f"mismatch: {first}): resume with the model config it was trained with"
        )


def train(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Train ``cfg.model`` on ``cfg.dataset`` (the ``train`` config)."""
    resumed, finished = resume_point(cfg, run_dir)
    if finished is not None:
        print(
            f"vos.train: {run_dir} already trained to step {finished['global_step']} "
            "(resume=auto): nothing to do"
        )
        return {k: float(v) for k, v in finished.items() if isinstance(v, (int, float))}
    ckpt_path, strategy, train_source, eval_source = _start(cfg)
    if resumed is not None:
        print(f"vos.train: continuing {resumed} (resume=auto)")
        ckpt_path = resumed
    extra_eval = extra_eval_sets(cfg.dataset.get("extra_eval"))
    module = VOSModule(
        model=cfg.model,
        optim=cfg.optim,
        lr_schedule=cfg.lr_schedule,
        loss=cfg.loss,
        inference=cfg.inference,
    )
    if cfg.get("channels_last"):
        # 4-D weights NHWC: convolutions then run NHWC (oneDNN's fast layout for bf16 on CPUs);
        # the checkpoint's tensors load into a model of either layout
        module = module.to(memory_format=torch.channels_last)
    network = module.network
    validate_eval = eval_source is not None
    instead = (
        "validating on dataset.extra_eval only" if extra_eval else "training without validation"
    )
    if eval_source is None:
        # dataset.eval=null (e.g. static-image pre-training, which has no videos)
        print(f"vos.train: dataset.eval is null; {instead}")
    elif eval_source.submission_folder is not None:
        # a split scored by a server (YouTube-VOS valid, DAVIS test-dev) has no masks to score
        print(
            f"vos.train: dataset.split={cfg.dataset.split!r} has no ground truth to validate on; "
            f"{instead} (use a split with masks, e.g. DAVIS val, to validate)"
        )
        validate_eval = False
    datamodule = VOSDataModule(
        train_source,
        eval_source if validate_eval else None,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        total_steps=cfg.trainer.max_steps,
        clip=cfg.data.clip,
        seed=cfg.seed,
        val_videos=cfg.data.val_videos,
        # flow from the data (oracle); a flow network estimates it in the training step
        with_flow=network.reader.needs.needs_flow and network.flow_is_oracle,
        extra_eval=extra_eval,
    )
    if ckpt_path is None and cfg.get("init_weights"):
        load_initial_weights(module, resolve_path(cfg.init_weights, "init_weights"))
    callbacks: list[pl.Callback] = []
    if cfg.model.get("schedule"):
        callbacks.append(ReaderSchedule(OmegaConf.to_container(cfg.model.schedule, resolve=True)))
    # layouts, first masks, late objects: before training, not at its validation
    for validation_set in datamodule.validation_sets():
        for video in datamodule.validation_videos(validation_set.source):
            try:
                validation_set.source.info(video)
            except DatasetError as error:
                if validation_set.extra is None:
                    raise
                extra = validation_set.extra
                raise DatasetError(f"{extra.key} ({extra.name}): {error}") from error
    validate = bool(datamodule.validation_sets())
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
    resumed_step = None
    if ckpt_path is not None:
        # read here first: weights only, and one clear line for a file that is not a checkpoint
        resumed = read_training_checkpoint(ckpt_path)
        resumed_step = int(resumed["global_step"])
        check_fits(module, resumed, ckpt_path)
    check_run_folder(run_dir, ckpt_path, resumed_step)
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
        # checkpoint.keep = N keeps the N most recent periodic checkpoints (-1: all)
        save_top_k=cfg.checkpoint.keep,
        monitor="step",
        mode="max",
        save_last=True,
    )
    final = FinalCheckpoint(run_dir / "checkpoints" / "last.ckpt")
    callbacks = [checkpoints, final, StepProgressBar(), *callbacks]
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer_options = OmegaConf.to_container(cfg.trainer, resolve=True)
    _note_slow_cpu_bf16(trainer_options)
    if not validate:
        trainer_options["limit_val_batches"] = 0
    started = time.perf_counter()
    try:
        try:
            trainer = _trainer(trainer_options, strategy, logger, callbacks, run_dir)
        except MisconfigurationException as error:  # e.g. trainer.accelerator=gpu, no GPU
            chosen = ", ".join(
                f"trainer.{key}={trainer_options.get(key)}" for key in ("accelerator", "devices")
            )
            raise ValueError(f"{chosen}: {error}") from error
        commit = source_commit()  # the code this process imported, before anyone edits it
        trainer.fit(
            module,
            datamodule=datamodule,
            ckpt_path=str(ckpt_path) if ckpt_path else None,
            weights_only=True,
        )
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith(("val/", f"{EXTRA_PREFIX}/"))
        }
        metrics["global_step"] = trainer.global_step
        last = run_dir / "checkpoints" / "last.ckpt"
        if trainer.global_step == 0 and last.is_file():
            # spawned processes trained (strategy=ddp_spawn): this one's trainer is at step 0
            metrics["global_step"] = int(read_training_checkpoint(last)["global_step"])
        metrics["params_m"] = sum(p.numel() for p in module.parameters()) / 1e6
        if metrics.get("val/ms_per_frame"):
            metrics["val/fps"] = 1000.0 / metrics["val/ms_per_frame"]
        metrics["fit_s"] = time.perf_counter() - started  # training and its validations
        # fit_s is this attempt's: from this step on (0: from the start)
        metrics["resumed_from_step"] = resumed_step or 0
        if trainer.is_global_zero:
            written = dict(metrics)
            per_video = module.last_per_video if isinstance(module, VOSModule) else None
            if per_video is not None:
                # the scores of every video, for intervals over videos (vos.report); left out
                # of the returned metrics and the logger's summary, which hold numbers only
                written["per_video"] = per_video
            if isinstance(module, VOSModule) and module.last_extra_per_video:
                written["extra_per_video"] = module.last_extra_per_video
            written["commit"] = commit
            write_json_atomic(run_dir / "metrics.json", written)
            log_summary(logger, metrics)
    finally:
        finish_logger(logger)
    return metrics


def _note_slow_cpu_bf16(trainer_options: dict) -> None:
    """One line when a bf16 run trains on a CPU whose bf16 convolutions are slower than fp32."""
    accelerator = str(trainer_options.get("accelerator", "auto"))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    precision = str(trainer_options.get("precision"))
    if on_cpu:
        note = slow_cpu_bf16_note(precision, torch.device("cpu"), key="trainer.precision")
        if note:
            print(f"vos.train: {note}")


def _trainer(options: dict, strategy: Any, logger: Any, callbacks: list, run_dir: Path):
    return pl.Trainer(
        **options,
        strategy=strategy,
        # the data modules shard their own loaders by rank (a resumable training sampler,
        # a padded DistributedSampler for validation videos): Lightning must not add its own
        use_distributed_sampler=False,
        logger=logger,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
    )
