"""J&F, the DAVIS semi-supervised VOS score, split by job.

- `vos.metrics.davis`: DAVIS's definitions (J, F, per-object statistics, `evaluate_video`);
- `vos.metrics.metric`: `JAndF`, the torchmetrics metric over videos (DDP-safe);
- `vos.metrics.files`: result CSVs and readable tables (`write_results`, `format_results`);
- `vos.metrics.scoring`: scoring folders of predicted PNGs (`score_predictions`,
  `evaluate_folders`); import it from there.
"""

from __future__ import annotations

from vos.metrics.davis import (
    BOUNDARY_THRESHOLD,
    boundary_tolerance,
    db_eval_boundary,
    db_eval_iou,
    db_statistics,
    disk,
    evaluate_video,
    f_measure,
    seg2bmap,
)
from vos.metrics.files import (
    GLOBAL_COLUMNS,
    GLOBAL_RESULTS_FILE,
    PER_SEQUENCE_COLUMNS,
    PER_SEQUENCE_RESULTS_FILE,
    ResultTables,
    format_results,
    write_factors,
    write_results,
)
from vos.metrics.metric import DEFAULT_FACTORS, JAndF, video_key

__all__ = [
    "BOUNDARY_THRESHOLD",
    "DEFAULT_FACTORS",
    "GLOBAL_COLUMNS",
    "GLOBAL_RESULTS_FILE",
    "PER_SEQUENCE_COLUMNS",
    "PER_SEQUENCE_RESULTS_FILE",
    "JAndF",
    "ResultTables",
    "boundary_tolerance",
    "db_eval_boundary",
    "db_eval_iou",
    "db_statistics",
    "disk",
    "evaluate_video",
    "f_measure",
    "format_results",
    "seg2bmap",
    "video_key",
    "write_factors",
    "write_results",
]
