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
import warnings
from collections.abc import Mapping

import cv2
import numpy as np

from vos.data.palette import VOID_LABEL

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
