"""J&F, the DAVIS semi-supervised VOS score, with DAVIS's own definitions.

The per-frame measures follow ``davis2017-evaluation`` exactly (re-implemented, not copied):

- **J** (region similarity) is the intersection over union of a predicted and a ground-truth
  object mask; 1 when both are empty.
- **F** (contour accuracy) is the F-measure of boundary precision and recall, a boundary pixel
  matching when the other boundary lies within ``ceil(0.008 * image diagonal)`` pixels
  (8 px at 480x854).
- Per object, over its scored frames: **Mean**, **Recall** (fraction of frames with a value
  strictly above 0.5) and **Decay** (mean of the first quarter minus mean of the last quarter).
- Global numbers are means over all objects of all videos (each object weighs the same),
  and ``J&F-Mean = (J-Mean + F-Mean) / 2``.

One deliberate difference: DAVIS computes the decay's bin indices in ``uint8``, which wraps
for sequences longer than 256 frames; here they are ``int64``, so long videos are right and
DAVIS-length videos give DAVIS's numbers.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torchmetrics
from torchmetrics.utilities.data import dim_zero_cat

from vos.data.palette import VOID_LABEL

GLOBAL_COLUMNS: tuple[str, ...] = (
    "J&F-Mean",
    "J-Mean",
    "J-Recall",
    "J-Decay",
    "F-Mean",
    "F-Recall",
    "F-Decay",
)
PER_SEQUENCE_COLUMNS: tuple[str, ...] = ("Sequence", "J-Mean", "F-Mean")
GLOBAL_RESULTS_FILE = "global_results.csv"
PER_SEQUENCE_RESULTS_FILE = "per-sequence_results.csv"

DEFAULT_FACTORS: tuple[str, ...] = (
    "distractors",
    "occlusion",
    "fast_motion",
    "leaves_frame",
    "late_objects",
)

BOUNDARY_THRESHOLD = 0.008  # DAVIS: boundary tolerance as a fraction of the image diagonal


# --------------------------------------------------------------------------------------------
# Per-frame measures
# --------------------------------------------------------------------------------------------


def db_eval_iou(
    annotation: np.ndarray, segmentation: np.ndarray, void: np.ndarray | None = None
) -> np.ndarray | float:
    """J: ``|S ∩ G| / |S ∪ G|`` over the pixels that are not void, per frame.

    Inputs are binary masks ``[H, W]`` or stacks ``[T, H, W]`` (anything non-zero is
    foreground). A frame whose union is empty (nothing predicted, nothing to find) scores 1.
    Returns a float for one frame, a ``float64 [T]`` array for a stack.
    """
    annotation = np.asarray(annotation).astype(bool)
    segmentation = np.asarray(segmentation).astype(bool)
    if annotation.shape != segmentation.shape:
        raise ValueError(
            f"annotation and segmentation shapes differ: {annotation.shape} vs {segmentation.shape}"
        )
    intersection = annotation & segmentation
    union = annotation | segmentation
    if void is not None:
        valid = ~np.asarray(void).astype(bool)
        intersection &= valid
        union &= valid
    inter_count = intersection.sum(axis=(-2, -1)).astype(np.float64)
    union_count = union.sum(axis=(-2, -1)).astype(np.float64)
    empty = union_count == 0
    iou = np.where(empty, 1.0, inter_count / np.where(empty, 1.0, union_count))
    return float(iou) if iou.ndim == 0 else iou


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """The DAVIS boundary map of a binary mask ``[H, W]`` (output at the input's size).

    A pixel is a boundary pixel when it differs from its right (E), lower (S) or lower-right
    (SE) neighbour. In the last row only E is compared, in the last column only S, and the
    bottom-right pixel is never a boundary. The boundary therefore sits half a pixel toward
    the origin, and object pixels touching the image border are not boundary pixels because of
    the border alone. Returns a ``bool [H, W]`` array.
    """
    seg = np.asarray(seg).astype(bool)
    if seg.ndim != 2:
        raise ValueError(f"seg2bmap expects a 2-D mask; got shape {seg.shape}")
    boundary = np.zeros_like(seg)
    # interior: right, lower and lower-right neighbours
    boundary[:-1, :-1] = (
        (seg[:-1, :-1] != seg[:-1, 1:])
        | (seg[:-1, :-1] != seg[1:, :-1])
        | (seg[:-1, :-1] != seg[1:, 1:])
    )
    boundary[-1, :-1] = seg[-1, :-1] != seg[-1, 1:]  # last row: right neighbour only
    boundary[:-1, -1] = seg[:-1, -1] != seg[1:, -1]  # last column: lower neighbour only
    boundary[-1, -1] = False
    return boundary


def disk(radius: int) -> np.ndarray:
    """The disk structuring element of ``skimage.morphology.disk``: ``x² + y² <= r²``.

    ``uint8 [2r + 1, 2r + 1]``.
    """
    radius = int(radius)
    if radius < 0:
        raise ValueError(f"disk radius must be >= 0; got {radius}")
    offsets = np.arange(-radius, radius + 1)
    rows, cols = np.meshgrid(offsets, offsets, indexing="ij")
    return (rows**2 + cols**2 <= radius**2).astype(np.uint8)


def boundary_tolerance(height: int, width: int, bound_th: float = BOUNDARY_THRESHOLD) -> int:
    """DAVIS's ``bound_pix``: ``ceil(bound_th * sqrt(H² + W²))``, or ``bound_th`` itself when
    it is >= 1 (then it is a pixel count)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(height, width)))


def f_measure(
    foreground: np.ndarray,
    gt: np.ndarray,
    void: np.ndarray | None = None,
    bound_th: float = BOUNDARY_THRESHOLD,
) -> float:
    """F: the boundary F-measure of one predicted mask against its ground truth ``[H, W]``.

    Both boundaries come from `seg2bmap` (after zeroing void pixels when ``void`` is given);
    each is dilated by ``disk(bound_pix)``; precision is the fraction of predicted boundary
    pixels within the dilated ground-truth boundary, recall the converse. DAVIS's empty
    cases: no predicted boundary but a ground-truth one → P=1, R=0; a predicted boundary but
    no ground-truth one → P=0, R=1; neither → P=R=1. ``F = 2PR / (P + R)``, 0 when P + R = 0.
    """
    foreground = np.asarray(foreground).astype(bool)
    gt = np.asarray(gt).astype(bool)
    if foreground.shape != gt.shape or foreground.ndim != 2:
        raise ValueError(
            f"f_measure expects two 2-D masks of one shape; got {foreground.shape} and {gt.shape}"
        )
    if void is not None:
        valid = ~np.asarray(void).astype(bool)
        foreground = foreground & valid
        gt = gt & valid
    fg_boundary = seg2bmap(foreground)
    gt_boundary = seg2bmap(gt)
    fg_count = int(fg_boundary.sum())
    gt_count = int(gt_boundary.sum())
    if fg_count == 0 and gt_count == 0:
        return 1.0
    if fg_count == 0 or gt_count == 0:
        return 0.0  # P=1,R=0 or P=0,R=1: F = 0 either way
    kernel = disk(boundary_tolerance(*gt.shape, bound_th=bound_th))
    fg_dilated = cv2.dilate(fg_boundary.astype(np.uint8), kernel).astype(bool)
    gt_dilated = cv2.dilate(gt_boundary.astype(np.uint8), kernel).astype(bool)
    precision = np.count_nonzero(fg_boundary & gt_dilated) / fg_count
    recall = np.count_nonzero(gt_boundary & fg_dilated) / gt_count
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def db_eval_boundary(
    annotation: np.ndarray,
    segmentation: np.ndarray,
    void: np.ndarray | None = None,
    bound_th: float = BOUNDARY_THRESHOLD,
) -> np.ndarray | float:
    """`f_measure` of ``segmentation`` against ``annotation`` for one frame or a stack
    ``[T, H, W]`` (DAVIS's name and argument order)."""
    annotation = np.asarray(annotation)
    segmentation = np.asarray(segmentation)
    if annotation.ndim == 2:
        return f_measure(segmentation, annotation, void, bound_th)
    voids = [None] * len(annotation) if void is None else void
    return np.array(
        [
            f_measure(seg, anno, frame_void, bound_th)
            for seg, anno, frame_void in zip(segmentation, annotation, voids, strict=True)
        ],
        dtype=np.float64,
    )


# --------------------------------------------------------------------------------------------
# Per-object statistics and the per-video protocol
# --------------------------------------------------------------------------------------------


def db_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """DAVIS's ``(mean, recall, decay)`` of one object's per-frame J or F values.

    - mean = ``nanmean(v)``;
    - recall = ``mean(v > 0.5)``, strictly greater (a frame at exactly 0.5 is a miss);
    - decay: with ``ids = round(linspace(1, n, 5)) - 1`` the four bins are
      ``v[ids[i] : ids[i+1] + 1]`` (neighbouring bins share their boundary frame), and
      decay = ``nanmean(bin 0) - nanmean(bin 3)``. The indices are ``int64``: DAVIS's
      ``uint8`` wraps past 256 frames.

    No values → all three are NaN.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    count = len(values)
    if count == 0:
        return math.nan, math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN bins → NaN
        mean = float(np.nanmean(values))
        recall = float(np.mean(values > 0.5))
        # + 1e-10 so that .5 rounds up as in DAVIS (np.round rounds half to even)
        ids = np.round(np.linspace(1, count, 5) + 1e-10).astype(np.int64) - 1
        first_bin = values[ids[0] : ids[1] + 1]
        last_bin = values[ids[3] : ids[4] + 1]
        decay = float(np.nanmean(first_bin) - np.nanmean(last_bin))
    return mean, recall, decay


def evaluate_video(
    gt: np.ndarray,
    pred: np.ndarray,
    first_frames: Mapping[int, int],
    bound_th: float = BOUNDARY_THRESHOLD,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per-frame J and F of every object of one video, semi-supervised protocol.

    ``gt`` and ``pred`` are label maps ``[T, H, W]``; ``first_frames`` maps each object id to
    the frame whose mask was given for it. An object is scored on the frames after its given
    frame and before the last frame (``[1:-1]`` for objects given in frame 0, as in DAVIS), so
    an object given in one of the last two frames has empty arrays. Void (255) in the ground
    truth is background, as in DAVIS's semi-supervised evaluation. A predicted label that is
    neither 0 nor a known object raises ValueError.

    Returns ``{object_id: (J float64 [n], F float64 [n])}``.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ValueError(
            f"gt and pred must be label maps [T, H, W] of one shape; got {gt.shape} and "
            f"{pred.shape}"
        )
    num_frames = gt.shape[0]
    known = {int(obj) for obj in first_frames}
    if VOID_LABEL in known or 0 in known:
        raise ValueError(f"object ids must lie in 1..254; got {sorted(known)}")
    for obj, first in first_frames.items():
        if not 0 <= first < num_frames:
            raise ValueError(
                f"object {obj} is given in frame {first}, outside the video's {num_frames} frames"
            )
    predicted = np.flatnonzero(np.bincount(pred.astype(np.int64).ravel(), minlength=256))
    unknown = sorted(int(label) for label in predicted if label != 0 and label not in known)
    if unknown:
        raise ValueError(
            f"predicted labels {unknown} are not objects of this video (known: {sorted(known)})"
        )

    scores: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for obj in sorted(known):
        frames = slice(first_frames[obj] + 1, num_frames - 1)
        gt_obj = gt[frames] == obj  # void (255) is not obj: it counts as background
        pred_obj = pred[frames] == obj
        if len(gt_obj) == 0:
            scores[obj] = (np.zeros(0), np.zeros(0))
            continue
        j_values = np.atleast_1d(db_eval_iou(gt_obj, pred_obj))
        f_values = np.atleast_1d(db_eval_boundary(gt_obj, pred_obj, bound_th=bound_th))
        scores[obj] = (j_values, f_values)
    return scores


# --------------------------------------------------------------------------------------------
# The metric
# --------------------------------------------------------------------------------------------

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
            if len(j_values) == 0:
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


# --------------------------------------------------------------------------------------------
# Writing and printing results (shared by `vos.evaluate` and `vos.eval`)
# --------------------------------------------------------------------------------------------

ResultTables = tuple[Mapping[str, float], Sequence[Mapping[str, object]]]


def _tables(results: JAndF | ResultTables) -> ResultTables:
    if isinstance(results, JAndF):
        return results.compute(), results.per_sequence()
    global_results, per_sequence = results
    return global_results, per_sequence


def _format_number(value: object) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def _write_atomically(path: Path, text: str) -> None:
    # a reader (or a crash) never sees half a file: write beside it, then rename over it
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", newline="") as tmp_file:
            tmp_file.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_results(output_dir: str | Path, results: JAndF | ResultTables) -> tuple[Path, Path]:
    """Write ``global_results.csv`` (``J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,
    F-Decay``) and ``per-sequence_results.csv`` (``Sequence,J-Mean,F-Mean``), atomically.

    ``results`` is a `JAndF` or a pair (global results, per-sequence rows). Per-factor
    scores are not written (the columns are DAVIS's). Returns the two paths.
    """
    global_results, per_sequence = _tables(results)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    missing = [column for column in GLOBAL_COLUMNS if column not in global_results]
    if missing:
        raise KeyError(f"global results lack the columns {missing}")

    global_lines = [
        ",".join(GLOBAL_COLUMNS),
        ",".join(_format_number(float(global_results[column])) for column in GLOBAL_COLUMNS),
    ]
    sequence_lines = [",".join(PER_SEQUENCE_COLUMNS)]
    for row in per_sequence:
        name = str(row["Sequence"])
        if "," in name or '"' in name:
            name = '"' + name.replace('"', '""') + '"'
        sequence_lines.append(
            ",".join(
                [name, _format_number(float(row["J-Mean"])), _format_number(float(row["F-Mean"]))]
            )
        )
    global_path = output_dir / GLOBAL_RESULTS_FILE
    sequence_path = output_dir / PER_SEQUENCE_RESULTS_FILE
    _write_atomically(global_path, "\n".join(global_lines) + "\n")
    _write_atomically(sequence_path, "\n".join(sequence_lines) + "\n")
    return global_path, sequence_path


def _format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], label_column: bool = True
) -> list[str]:
    """Aligned text columns: numbers right-aligned, the first column left-aligned when it
    holds labels."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = []
    for cells in [header, *rows]:
        aligned = [cell.rjust(width) for cell, width in zip(cells, widths)]
        if label_column:
            aligned[0] = cells[0].ljust(widths[0])
        lines.append("  ".join(aligned))
    return lines


def format_results(results: JAndF | ResultTables, title: str = "") -> str:
    """Readable tables: the global numbers, per-factor J&F (if any), then per sequence."""
    global_results, per_sequence = _tables(results)
    suffix = f" for {title}" if title else ""
    lines = [f"---------- Global results{suffix} ----------"]
    lines += _format_table(
        GLOBAL_COLUMNS,
        [[f"{float(global_results[column]):.3f}" for column in GLOBAL_COLUMNS]],
        label_column=False,
    )
    factor_rows = [
        [name, f"{float(value):.3f}"]
        for name, value in global_results.items()
        if name not in GLOBAL_COLUMNS
    ]
    if factor_rows:
        lines += ["", f"---------- J&F by factor{suffix} ----------"]
        lines += _format_table(["Subset", "J&F-Mean"], factor_rows)
    lines += ["", f"---------- Per-sequence results{suffix} ----------"]
    lines += _format_table(
        PER_SEQUENCE_COLUMNS,
        [
            [str(row["Sequence"]), f"{float(row['J-Mean']):.3f}", f"{float(row['F-Mean']):.3f}"]
            for row in per_sequence
        ],
    )
    return "\n".join(lines)
