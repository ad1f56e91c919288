"""``python -m vos.train_flow``: train RMNet's TinyFlowNet on its own task (Hydra main).

L1 against the dataset's ground-truth backward flow, validated by end-point error
(``val/epe`` beside ``val/epe_zero_flow``, the no-motion baseline on the same pairs). The run
folder holds what ``vos.train``'s does; RMNet loads the network with ``model/flow=tinyflownet
model.flow.weights=<run>/checkpoints/last.ckpt``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vos.cli.errors import hydra_command, reported_as_one_line
from vos.config import CONFIG_DIR
from vos.lightning import training


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train_flow")
def _main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with reported_as_one_line("vos.train_flow"):
        metrics = training.train_flow(cfg, run_dir)
    return metrics.get("val/epe")


main = hydra_command("vos.train_flow", "train_flow", _main, training.check_run_folder_of)
