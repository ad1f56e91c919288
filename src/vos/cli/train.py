"""``python -m vos.train``: train a model on a dataset (Hydra main; Lightning loop).

Writes into the Hydra run folder: ``.hydra/config.yaml`` (the resolved config),
``checkpoints/`` (every ``checkpoint.every_n_steps`` and ``last.ckpt``, written atomically),
``metrics.json`` (the last validation scores: J&F, J, F and their recall and decay, J&F per
video factor ``val/J&F-Mean/<factor>``, ``val/ms_per_frame`` and ``val/fps``,
``val/read_ms_per_frame``, and under ``logger=wandb`` ``val/peak_memory_mb``; ``params_m``,
``global_step``, ``fit_s`` and ``resumed_from_step`` (this attempt's seconds, from that
step); ``per_video``: the last validation's scores per video, which
``vos.report`` resamples for its intervals; with ``dataset.extra_eval``, each extra set's
``extra/<name>/...`` scores and its rows in ``extra_per_video.<name>``) and the logger's
files (under wandb also a per-video table and mask overlays per validation:
`vos.lightning.dashboard`). Returns the validation J&F (what a Hydra sweeper maximises).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vos.cli.errors import hydra_command, reported_as_one_line
from vos.config import CONFIG_DIR
from vos.lightning import training


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with reported_as_one_line("vos.train"):
        metrics = training.train(cfg, run_dir)
    return metrics.get("val/J&F-Mean")


main = hydra_command("vos.train", "train", _main, training.check_run_folder_of)
