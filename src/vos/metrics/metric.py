"""`JAndF`: the torchmetrics `Metric` that accumulates DAVIS's J&F over whole videos.

Each video is scored with `vos.metrics.davis` (the DAVIS definitions live there); the metric
keeps one row of per-object statistics per (video, object), gathers the rows across processes,
deduplicates them and averages them as DAVIS does, overall, per factor and per video.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torchmetrics
from torchmetrics.utilities.data import dim_zero_cat

from vos.metrics.davis import db_statistics, evaluate_video

DEFAULT_FACTORS: tuple[str, ...] = (
    "distractors",
    "occlusion",
    "fast_motion",
    "leaves_frame",
    "late_objects",
)

# columns of one stored row (one per video and object); factor columns follow
_KEY, _OBJECT, _J_MEAN, _J_RECALL, _J_DECAY, _F_MEAN, _F_RECALL, _F_DECAY = range(8)
_FIRST_FACTOR = 8


def video_key(video: str) -> int:
    """A stable integer id of a video name (crc32), identical on every rank and run."""
    return zlib.crc32(video.encode("utf-8"))


def _to_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


class JAndF(torchmetrics.Metric):
    """J&F over videos with DAVIS's averaging, safe under distributed evaluation.

    ``update`` scores one whole video (numpy, on CPU) and stores one row per object. Rows are
    concatenated across processes, then deduplicated by (video, object): a
    ``DistributedSampler`` that pads its last batch by repeating a video cannot bias the
    result. Objects with no scored frame (given in one of the last two frames) are skipped.

    ``compute()`` returns floats: ``J&F-Mean, J-Mean, J-Recall, J-Decay, F-Mean, F-Recall,
    F-Decay`` (means over all objects of all videos) and, for each factor that at least one
    scored object's video has, ``J&F-Mean/<f>`` and ``J&F-Mean/no_<f>`` (over the objects of
    videos with / without it; videos whose factors do not mention it are in neither).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, factors: Sequence[str] = DEFAULT_FACTORS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.factors = tuple(factors)
        self._row_width = _FIRST_FACTOR + len(self.factors)
        # one flat float64 row per (video, object): key, id, J M/R/D, F M/R/D, factor bits
        # (1 with, 0 without, NaN unknown). float64 keeps crc32 keys exact; rows are 1-D so
        # that the empty tensor torchmetrics gathers from a rank without data (in the metric's
        # dtype, hence set_dtype) concatenates with them
        self.add_state("rows", default=[], dist_reduce_fx="cat")
        self.set_dtype(torch.float64)
        # names are only known on the rank that saw the video; keys stand in for the others
        self._video_names: dict[int, str] = {}
        # objects with no frame to score (given in one of the last two frames, or a video of
        # fewer than three frames: DAVIS scores neither the given frame nor the last one);
        # they are left out of the means, and the result files say so
        self.unscored: list[str] = []

    def reset(self) -> None:
        super().reset()
        self.unscored = []

    def update(
        self,
        video: str,
        gt: np.ndarray | torch.Tensor,
        pred: np.ndarray | torch.Tensor,
        first_frames: Mapping[int, int],
        factors: Mapping[str, bool] | None = None,
    ) -> None:
        """Score one video: label maps ``gt``, ``pred`` ``[T, H, W]``, objects' given frames.

        ``factors`` are the video's properties ({} or None when unknown). Unless it says
        otherwise, ``late_objects`` is true when some object is given after frame 0.
        """
        scores = evaluate_video(_to_numpy(gt), _to_numpy(pred), first_frames)
        key = video_key(video)
        self._video_names[key] = video
        factor_bits = self._factor_bits(factors or {}, first_frames)
        for obj, (j_values, f_values) in scores.items():
            if len(j_values) == 0:  # a decision DAVIS makes too, said aloud (`unscored`)
                self.unscored.append(f"{video} object {obj}")
                continue
            row = [key, obj, *db_statistics(j_values), *db_statistics(f_values), *factor_bits]
            self.rows.append(torch.tensor(row, dtype=torch.float64, device=self.device))

    def _factor_bits(
        self, factors: Mapping[str, bool], first_frames: Mapping[int, int]
    ) -> list[float]:
        bits = []
        for name in self.factors:
            if name in factors:
                bits.append(1.0 if factors[name] else 0.0)
            elif name == "late_objects":
                bits.append(1.0 if any(first > 0 for first in first_frames.values()) else 0.0)
            else:
                bits.append(math.nan)
        return bits

    def _unique_rows(self) -> np.ndarray:
        """The stored rows, first occurrence of each (video, object), ``float64 [N, 8 + F]``."""
        has_rows = bool(self.rows) if isinstance(self.rows, list) else self.rows.numel() > 0
        if not has_rows:
            raise ValueError(
                "JAndF has no scored objects: call update() with at least one video whose "
                "objects have frames to score before compute()"
            )
        flat = dim_zero_cat(self.rows).detach().cpu().double().numpy()
        rows = flat.reshape(-1, self._row_width)
        _, first_index = np.unique(rows[:, [_KEY, _OBJECT]], axis=0, return_index=True)
        return rows[np.sort(first_index)]

    def compute(self) -> dict[str, float]:
        rows = self._unique_rows()
        results = _global_scores(rows)
        for index, name in enumerate(self.factors):
            bits = rows[:, _FIRST_FACTOR + index]
            with_factor, without_factor = rows[bits == 1], rows[bits == 0]
            if len(with_factor) == 0:
                continue
            results[f"J&F-Mean/{name}"] = _global_scores(with_factor)["J&F-Mean"]
            if len(without_factor):
                results[f"J&F-Mean/no_{name}"] = _global_scores(without_factor)["J&F-Mean"]
        return results

    def _all_video_names(self) -> dict[int, str]:
        """Every rank's video names by key (each rank only knows the videos it scored).
        Collective under DDP: every rank must call it."""
        names = dict(self._video_names)
        if (
            torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and torch.distributed.get_world_size(self.process_group) > 1
        ):
            gathered: list[dict[int, str] | None] = [None] * torch.distributed.get_world_size(
                self.process_group
            )
            torch.distributed.all_gather_object(gathered, names, group=self.process_group)
            for rank_names in gathered:
                names.update(rank_names or {})
        return names

    def per_sequence(self) -> list[dict[str, object]]:
        """One row per scored object: ``Sequence`` (``<video>_<id>``), ``J-Mean``, ``F-Mean``.

        Under DDP this gathers the states and the names, so every rank must call it (like
        ``compute``).
        """
        with self.sync_context(dist_sync_fn=self.dist_sync_fn):
            rows = self._unique_rows()
        names = self._all_video_names()
        table = []
        for row in rows:
            key = int(row[_KEY])
            video = names.get(key, f"video_{key}")
            table.append(
                {
                    "Sequence": f"{video}_{int(row[_OBJECT])}",
                    "J-Mean": float(row[_J_MEAN]),
                    "F-Mean": float(row[_F_MEAN]),
                }
            )
        return table

    def per_video(self) -> list[dict[str, object]]:
        """One row per scored video, sorted by name: ``video``, ``objects`` (scored objects),
        ``J&F-Mean``, ``J-Mean``, ``F-Mean`` (means over the video's objects) and each factor
        (True, False, or None when unknown).

        From the gathered, deduplicated rows: under DDP every rank must call it and every
        rank gets every video, named.
        """
        with self.sync_context(dist_sync_fn=self.dist_sync_fn):
            rows = self._unique_rows()
        names = self._all_video_names()
        table = []
        for key in np.unique(rows[:, _KEY]):
            video_rows = rows[rows[:, _KEY] == key]
            scores = _global_scores(video_rows)
            entry: dict[str, object] = {
                "video": names.get(int(key), f"video_{int(key)}"),
                "objects": len(video_rows),
                "J&F-Mean": scores["J&F-Mean"],
                "J-Mean": scores["J-Mean"],
                "F-Mean": scores["F-Mean"],
            }
            for index, name in enumerate(self.factors):
                bit = video_rows[0, _FIRST_FACTOR + index]
                entry[name] = None if math.isnan(bit) else bool(bit == 1)
            table.append(entry)
        return sorted(table, key=lambda entry: str(entry["video"]))


def _global_scores(rows: np.ndarray) -> dict[str, float]:
    """DAVIS's global numbers: plain means over objects."""
    means = rows.mean(axis=0)
    j_mean, f_mean = float(means[_J_MEAN]), float(means[_F_MEAN])
    return {
        "J&F-Mean": (j_mean + f_mean) / 2,
        "J-Mean": j_mean,
        "J-Recall": float(means[_J_RECALL]),
        "J-Decay": float(means[_J_DECAY]),
        "F-Mean": f_mean,
        "F-Recall": float(means[_F_RECALL]),
        "F-Decay": float(means[_F_DECAY]),
    }
