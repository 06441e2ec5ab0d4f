"""Pairing of two detection dumps, below both the statistics (:mod:`.compare`) and the reports (:mod:`.report`).

Per frame: detections with ``confidence >= confidence`` are kept on both sides;
A's kept detections are visited in descending confidence (a stable sort, so
equal confidences keep dump order); each takes the still unpaired kept B
detection of the same ``class_id`` with the highest box IoU (ties: first in B's
dump order) if that IoU is ``>= iou``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .dumps import DetectionRecord, Dump

DEFAULT_CONFIDENCE = 0.4
DEFAULT_IOU = 0.5


class CompareInputError(ValueError):
    """The two dumps cannot be compared (e.g. the same frame has different sizes)."""


@dataclass(frozen=True)
class MatchedPair:
    """A paired detection; indices point into each frame's detection list in dump order.

    ``mask_iou`` is ``None`` when neither side has a mask and 0.0 when only
    one side has one. ``polygons_identical`` is ``None`` unless both sides carry a
    polygon; ``polygon_shift`` is then the largest distance in pixels between
    corresponding points (``None`` when the point counts differ), see :func:`polygon_shift`.
    """

    frame_id: int
    index_a: int
    index_b: int
    box_iou: float
    mask_iou: float | None
    conf_delta: float
    boxes_identical: bool
    masks_identical: bool
    polygons_identical: bool | None = None
    polygon_shift: float | None = None


@dataclass(frozen=True)
class UnmatchedDetection:
    """A kept detection of ``arm`` ("a" or "b") that found no partner.

    ``nearest_index`` is the detection of the other arm in the same frame
    (any class, any confidence) with the highest box IoU ``nearest_iou > 0``,
    or ``None``; it tells a class flip or a confidence flicker from a miss.
    """

    frame_id: int
    arm: str
    index: int
    nearest_index: int | None
    nearest_iou: float


@dataclass
class Pairing:
    """Raw pairing of two dumps, before statistics.

    Attributes:
        pairs / unmatched: over all frames, in frame_id order.
        frames_common / frames_only_in_a / frames_only_in_b: sorted frame ids.
        counts: per frame id, kept detections in A and in B (``None`` where
            the frame is missing from that dump).
    """

    pairs: list[MatchedPair]
    unmatched: list[UnmatchedDetection]
    frames_common: list[int]
    frames_only_in_a: list[int]
    frames_only_in_b: list[int]
    counts: dict[int, tuple[int | None, int | None]]


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes.

    Args:
        a: ``(N, 4)`` xyxy boxes in pixels.
        b: ``(M, 4)`` xyxy boxes in pixels.

    Returns:
        ``(N, M)`` float64 IoUs. Inverted corners count as zero area; two
        zero-area boxes have IoU 1 if they are equal and 0 otherwise.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    equal = np.all(a[:, None, :] == b[None, :, :], axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, equal.astype(np.float64))


def mask_iou(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    """IoU of two RLE masks (see :func:`~.dumps.encode_mask`).

    Returns ``None`` if both are ``None``, 0.0 if only one is, 1.0 for
    identical encodings (including two empty masks, which pycocotools would
    score 0), else ``pycocotools.mask.iou``.
    """
    if a is None and b is None:
        return None
    if a is None or b is None:
        return 0.0
    if a["counts"] == b["counts"] and list(a["size"]) == list(b["size"]):
        return 1.0
    return float(mask_utils.iou([a], [b], [0])[0][0])


def polygon_shift(
    a: Sequence[tuple[float, float]] | None, b: Sequence[tuple[float, float]] | None
) -> float | None:
    """Largest Euclidean distance in pixels between point k of ``a`` and point k of ``b``.

    ``None`` when either is missing or their point counts differ; 0.0 for two empty polygons.
    """
    if a is None or b is None or len(a) != len(b):
        return None
    if not len(a):
        return 0.0
    delta = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(np.sqrt((delta**2).sum(axis=1)).max())


def _boxes(dets: Sequence[DetectionRecord]) -> np.ndarray:
    return np.array([d.xyxy for d in dets], dtype=np.float64).reshape(-1, 4)


def _greedy_pairs(
    a: Sequence[DetectionRecord],
    b: Sequence[DetectionRecord],
    ious: np.ndarray,
    confidence: float,
    iou: float,
) -> list[tuple[int, int]]:
    """Pairs ``(index_a, index_b)`` in pairing order, given the full A x B IoU matrix."""
    kept_a = [i for i, d in enumerate(a) if d.confidence >= confidence]
    kept_b = np.array([j for j, d in enumerate(b) if d.confidence >= confidence], dtype=np.intp)
    class_b = np.array([b[j].class_id for j in kept_b], dtype=np.int64)
    free = np.ones(len(kept_b), dtype=bool)
    pairs = []
    # sorted() is stable, so equal confidences are visited in dump order.
    for i in sorted(kept_a, key=lambda k: -a[k].confidence):
        candidates = free & (class_b == a[i].class_id)
        if not candidates.any():
            continue
        scores = np.where(candidates, ious[i, kept_b], -np.inf)
        best = int(np.argmax(scores))  # argmax returns the first maximum: B's dump order breaks ties
        if scores[best] >= iou:
            free[best] = False
            pairs.append((i, int(kept_b[best])))
    return pairs


def pair_detections(
    a: Sequence[DetectionRecord],
    b: Sequence[DetectionRecord],
    confidence: float = DEFAULT_CONFIDENCE,
    iou: float = DEFAULT_IOU,
) -> list[tuple[int, int]]:
    """Greedy pairing of one frame's detections.

    Returns:
        ``(index_a, index_b)`` pairs (indices into ``a`` and ``b``), in the
        order they were formed (A by descending confidence).
    """
    return _greedy_pairs(a, b, box_iou_matrix(_boxes(a), _boxes(b)), confidence, iou)


def _nearest(ious_row: np.ndarray) -> tuple[int | None, float]:
    if ious_row.size == 0 or ious_row.max() <= 0:
        return None, 0.0
    best = int(np.argmax(ious_row))
    return best, float(ious_row[best])


def pair_dumps(a: Dump, b: Dump, confidence: float = DEFAULT_CONFIDENCE, iou: float = DEFAULT_IOU) -> Pairing:
    """Pair every frame of two dumps and compute per-pair box/mask IoU and |Δconf|.

    Raises:
        CompareInputError: a frame present in both dumps has different sizes.
    """
    ids_a, ids_b = set(a.frames), set(b.frames)
    pairing = Pairing(
        pairs=[],
        unmatched=[],
        frames_common=sorted(ids_a & ids_b),
        frames_only_in_a=sorted(ids_a - ids_b),
        frames_only_in_b=sorted(ids_b - ids_a),
        counts={},
    )
    for frame_id in sorted(ids_a | ids_b):
        fa, fb = a.frames.get(frame_id), b.frames.get(frame_id)
        dets_a = fa.detections if fa is not None else ()
        dets_b = fb.detections if fb is not None else ()
        if fa is not None and fb is not None and (fa.width, fa.height) != (fb.width, fb.height):
            raise CompareInputError(
                f"frame {frame_id}: A is {fa.width}x{fa.height} but B is {fb.width}x{fb.height}; "
                "the dumps do not come from the same frames"
            )
        ious = box_iou_matrix(_boxes(dets_a), _boxes(dets_b))
        pairs = _greedy_pairs(dets_a, dets_b, ious, confidence, iou)
        for i, j in pairs:
            da, db = dets_a[i], dets_b[j]
            pairing.pairs.append(
                MatchedPair(
                    frame_id=frame_id,
                    index_a=i,
                    index_b=j,
                    box_iou=float(ious[i, j]),
                    mask_iou=mask_iou(da.mask, db.mask),
                    conf_delta=abs(da.confidence - db.confidence),
                    boxes_identical=da.xyxy == db.xyxy,
                    masks_identical=da.mask == db.mask,
                    polygons_identical=None
                    if da.polygon is None or db.polygon is None
                    else da.polygon == db.polygon,
                    polygon_shift=polygon_shift(da.polygon, db.polygon),
                )
            )
        paired_a = {i for i, _ in pairs}
        paired_b = {j for _, j in pairs}
        for arm, dets, paired, matrix in (("a", dets_a, paired_a, ious), ("b", dets_b, paired_b, ious.T)):
            for k, det in enumerate(dets):
                if det.confidence >= confidence and k not in paired:
                    nearest, nearest_iou = _nearest(matrix[k])
                    pairing.unmatched.append(UnmatchedDetection(frame_id, arm, k, nearest, nearest_iou))
        pairing.counts[frame_id] = (
            sum(d.confidence >= confidence for d in dets_a) if fa is not None else None,
            sum(d.confidence >= confidence for d in dets_b) if fb is not None else None,
        )
    return pairing


def save_result(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a :func:`compare` result as strict JSON (no NaN) with a trailing newline."""
    Path(path).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
