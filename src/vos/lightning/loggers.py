"""Loggers from the `logger=` group; wandb is offline unless credentials are configured.

Under a Hydra multirun every job is its own wandb run (a fresh id, never resumed), the jobs of
one sweep share a group and each job is named by the overrides its sweep varies; see
`sweep_identity`.
"""

from __future__ import annotations

import netrc
import os
import secrets
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf


def wandb_credentials_configured() -> bool:
    """True when wandb could sync: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def resolve_wandb_mode(mode: str) -> str:
    if mode not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"logger.mode={mode!r}; expected auto, online, offline or disabled")
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if wandb_credentials_configured() else "offline"


def _override_key(override: Any) -> str:
    return override.key_or_group if override.package is None else override.get_key_element()


def swept_keys(hydra_cfg: DictConfig) -> list[str]:
    """The keys a multirun varies: the sweeper's ``params`` (an ``experiment=`` table, an
    ``hparams_search=`` space) and the command line's sweeps (``model=stm,lmrc``), which the
    basic sweeper records in ``<sweep dir>/multirun.yaml``."""
    keys = [str(k) for k in (OmegaConf.select(hydra_cfg, "sweeper.params") or {})]
    multirun_file = Path(str(hydra_cfg.sweep.dir)) / "multirun.yaml"
    if multirun_file.is_file():
        task = OmegaConf.select(OmegaConf.load(multirun_file), "hydra.overrides.task") or []
        parser = OverridesParser.create()
        for override in parser.parse_overrides([str(line) for line in task]):
            if override.is_sweep_override() and _override_key(override) not in keys:
                keys.append(_override_key(override))
    return keys


def sweep_identity(
    hydra_cfg: DictConfig | None, run_name: str, group: str | None
) -> tuple[str | None, str]:
    """The wandb ``(group, name)`` of a job.

    A single run keeps ``logger.group`` and ``run_name``. A multirun job's group is
    ``logger.group`` when set, else the sweep's ``experiment=`` (``rmnet_table5``: reruns of a
    table share its group), else the multirun folder's last two parts (with the default
    ``hydra.sweep.dir``, the sweep's date and time: ``2025-01-31/12-00-00``). Its name is the
    job's values of the swept keys (``model.reader.memory_region=false,...``), or ``run_name``
    when none is found.
    """
    if hydra_cfg is None or hydra_cfg.get("mode") != RunMode.MULTIRUN:
        return group, run_name
    if not group:
        experiment = OmegaConf.select(hydra_cfg, "runtime.choices.experiment")
        if experiment:
            group = str(experiment)
        else:
            group = "/".join(Path(str(hydra_cfg.sweep.dir)).parts[-2:])
    keys = swept_keys(hydra_cfg)
    parser = OverridesParser.create()
    job_overrides = parser.parse_overrides([str(line) for line in hydra_cfg.overrides.task])
    parts = [o.input_line.lstrip("+~") for o in job_overrides if _override_key(o) in keys]
    return group, ",".join(parts) or run_name


def build_logger(
    cfg: DictConfig,
    run_dir: Path,
    run_name: str,
    full_config: DictConfig,
    group: str | None = None,
) -> Any:
    """The Lightning logger of ``logger=``; ``group`` (wandb) defaults to ``logger.group``."""
    name = cfg.name
    if name == "none":
        return False
    if name == "csv":
        return _appending_csv_logger(run_dir)
    if name == "wandb":
        import wandb
        from pytorch_lightning.loggers import WandbLogger

        if wandb.run is not None:
            # a run left open (a job that failed before finish_logger): Lightning would log
            # into it instead of starting this job's own run
            wandb.finish()
        mode = resolve_wandb_mode(cfg.mode)
        logger = WandbLogger(
            project=cfg.project,
            entity=cfg.entity,
            group=group or cfg.group,
            name=run_name,
            save_dir=str(run_dir),
            log_model=cfg.log_model,
            mode=mode,  # passed to wandb.init, so it does not leak into later runs' env
            config=OmegaConf.to_container(full_config, resolve=True),
            # a fresh id and resume="never": neither a WANDB_RUN_ID / WANDB_RESUME left in the
            # environment nor Lightning's default resume="allow" can continue another run
            id=secrets.token_hex(6),
            resume="never",
        )
        return logger
    raise ValueError(f"unknown logger {name!r}; expected wandb, csv or none (logger=...)")


def _appending_csv_logger(run_dir: Path) -> Any:
    """Lightning's CSV logger writing ``<run>/csv/metrics.csv``, except that a resumed run
    appends to the file its earlier attempts wrote (Lightning's own deletes it).

    A step logged twice is a step the resumed attempt trained again from its checkpoint; the
    later row belongs to the run that went on.
    """
    import csv

    from lightning_fabric.loggers.logger import rank_zero_experiment
    from pytorch_lightning.loggers import CSVLogger
    from pytorch_lightning.loggers.csv_logs import ExperimentWriter

    class AppendingWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            # start from the header already on disk, so that rows append under it and a new
            # key rewrites the file with the old columns kept
            if self._fs.isfile(self.metrics_file_path):
                with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                    self.metrics_keys = list(next(csv.reader(file), []))

    class AppendingCSVLogger(CSVLogger):
        @property
        @rank_zero_experiment  # other ranks write nothing, as Lightning's own
        def experiment(self) -> ExperimentWriter:
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = AppendingWriter(log_dir=self.log_dir)
            return self._experiment

    return AppendingCSVLogger(save_dir=str(run_dir), name="", version="csv")


def log_summary(logger: Any, metrics: dict[str, float]) -> None:
    """The run's final numbers (``metrics.json``) in the wandb run's summary, where the
    dashboard's tables read them (parameters, fps and training time are never logged as
    history)."""
    if logger and type(logger).__name__ == "WandbLogger":
        import wandb

        # only into this process's open run: after ddp_spawn the run lived in the rank-0
        # child, and touching logger.experiment here would start a second one
        if wandb.run is not None:
            wandb.run.summary.update(metrics)


def finish_logger(logger: Any) -> None:
    """Close a wandb run so the next job in the process (multirun) never reuses it."""
    if logger and type(logger).__name__ == "WandbLogger":
        import wandb

        if wandb.run is not None:
            wandb.finish()
