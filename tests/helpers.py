"""Small configurations that keep end-to-end tests within seconds on a 2-core CPU."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from vos.config import CONFIG_DIR

TINY = [
    "logger=none",
    "dataset.height=48",
    "dataset.width=64",
    "dataset.train.num_videos=4",
    "dataset.train.num_frames=12",
    "dataset.eval.num_videos=2",
    "dataset.eval.num_frames=30",
    "model.key_channels=8",
    "model.value_channels=16",
    "model.decoder_channels=8",
    "data.batch_size=2",
    "data.num_workers=0",
    "trainer.max_steps=4",
    "trainer.val_check_interval=4",
    "trainer.log_every_n_steps=1",
    "checkpoint.every_n_steps=2",
]


def compose_config(name: str = "train", overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(name, overrides=list(overrides or []))
