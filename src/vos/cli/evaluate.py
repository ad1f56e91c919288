"""Score a folder of predicted masks against DAVIS ground truth (semi-supervised protocol).

    python -m vos.evaluate gt_root=<DAVIS root> pred_root=<predictions> split=val

Predictions are ``<pred_root>/<video>/<frame>.png`` (palette or grayscale PNGs whose values
are object ids), named like the frames in ``JPEGImages``. The scores (see `vos.metrics`) are
printed and written to ``global_results.csv`` and ``per-sequence_results.csv`` in
``output_dir`` (default: ``pred_root``), with ``factors.json`` (each video's known factors).
Unlike the DAVIS script, existing CSVs are never
reused: every run recomputes.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vos.cli.errors import hydra_command, reported_as_one_line
from vos.config import CONFIG_DIR
from vos.files import check_output_folder
from vos.metrics.files import format_results, write_factors, write_results
from vos.metrics.scoring import evaluate_folders


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def _main(cfg: DictConfig) -> None:
    with reported_as_one_line("vos.evaluate"):
        output_dir = cfg.output_dir if cfg.output_dir is not None else cfg.pred_root
        key = "output_dir" if cfg.output_dir is not None else "pred_root"
        # the CSVs join the predictions: the folder may hold files, but not the ground truth's
        check_output_folder(output_dir, key, [cfg.gt_root], overwrite=True)
        metric = evaluate_folders(
            cfg.gt_root, cfg.pred_root, str(cfg.split), str(cfg.resolution), str(cfg.year)
        )
        global_path, sequence_path = write_results(output_dir, metric)
        write_factors(output_dir, metric)
    print(format_results(metric, title=str(cfg.split)))
    print(f"\nwrote {global_path} and {sequence_path}")


main = hydra_command("vos.evaluate", "evaluate", _main)
