"""Loggers from the `logger=` group; wandb is offline unless credentials are configured."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

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


def build_logger(cfg: DictConfig, run_dir: Path, run_name: str, full_config: DictConfig) -> Any:
    name = cfg.name
    if name == "none":
        return False
    if name == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="", version="csv")
    if name == "wandb":
        from pytorch_lightning.loggers import WandbLogger

        mode = resolve_wandb_mode(cfg.mode)
        logger = WandbLogger(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            name=run_name,
            save_dir=str(run_dir),
            log_model=cfg.log_model,
            mode=mode,  # passed to wandb.init, so it does not leak into later runs' env
            config=OmegaConf.to_container(full_config, resolve=True),
        )
        return logger
    raise ValueError(f"unknown logger {name!r}; expected wandb, csv or none (logger=...)")


def finish_logger(logger: Any) -> None:
    """Close a wandb run so the next job in the process (multirun) never reuses it."""
    if logger and type(logger).__name__ == "WandbLogger":
        import wandb

        if wandb.run is not None:
            wandb.finish()
