"""Compare two detection dumps (arm A vs arm B) and gate on their agreement.

Pairing, per frame: detections with ``confidence >= confidence`` are kept on
both sides; A's kept detections are visited in descending confidence (a
stable sort, so equal confidences keep dump order); each takes the still
unpaired kept B detection of the same ``class_id`` with the highest box IoU
(ties: first in B's dump order) if that IoU is ``>= iou``. Frames present in
only one dump are listed and their detections count as unmatched.

Percentiles are ``numpy.percentile`` with its default ``"linear"`` method.
Every statistic over an empty set is ``None`` (JSON ``null``), never NaN.
"""

from __future__ import annotations

import argparse
import json
import logging
import operator
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .dumps import DetectionRecord, Dump, DumpFormatError, read_dump
from .switches import unexercised_switch

logger = logging.getLogger(__name__)

DEFAULT_CONFIDENCE = 0.4
DEFAULT_IOU = 0.5
DEFAULT_MIN_MATCHED = 0.995
DEFAULT_MAX_CONF_DELTA = 0.05
DEFAULT_MIN_MASK_IOU_P5 = 0.95
DEFAULT_WORST = 20

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2


class CompareInputError(ValueError):
    """The two dumps cannot be compared (e.g. the same frame has different sizes)."""


@dataclass(frozen=True)
class MatchedPair:
    """A paired detection; indices point into each frame's detection list in dump order.

    ``mask_iou`` is ``None`` when neither side has a mask and 0.0 when only
    one side has one.
    """

    frame_id: int
    index_a: int
    index_b: int
    box_iou: float
    mask_iou: float | None
    conf_delta: float
    boxes_identical: bool
    masks_identical: bool


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


def _describe(values: Sequence[float], stats: Sequence[str]) -> dict[str, Any]:
    """``count`` plus the named statistics ("mean", "min", "max", "pNN"); ``None`` when empty."""
    arr = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {"count": int(arr.size)}
    for name in stats:
        if arr.size == 0:
            out[name] = None
        elif name == "mean":
            out[name] = float(arr.mean())
        elif name == "min":
            out[name] = float(arr.min())
        elif name == "max":
            out[name] = float(arr.max())
        else:
            out[name] = float(np.percentile(arr, float(name[1:])))
    return out


def _gate(value: float | None, threshold: float, comparison: str) -> dict[str, Any]:
    """A gate with no data to judge (``value is None``) passes and is flagged ``vacuous``."""
    ops: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}
    return {
        "value": value,
        "threshold": threshold,
        "comparison": comparison,
        "passed": value is None or ops[comparison](value, threshold),
        "vacuous": value is None,
    }


def _detection_summary(det: DetectionRecord, index: int) -> dict[str, Any]:
    return {
        "index": index,
        "class_id": det.class_id,
        "class_name": det.class_name,
        "confidence": det.confidence,
        "xyxy": list(det.xyxy),
    }


def _worst(a: Dump, b: Dump, pairing: Pairing, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` worst disagreements, most severe first.

    Severity ``score``: an unmatched detection scores ``1 + confidence`` (so
    it outranks any matched pair, confident misses first); a matched pair
    scores ``max(1 - min(box IoU, mask IoU), |Δconf|)`` and is ``low_iou`` or
    ``conf`` by whichever term dominates; perfectly agreeing pairs are left out.
    """
    entries: list[dict[str, Any]] = []
    dumps = {"a": a, "b": b}
    for u in pairing.unmatched:
        other = "b" if u.arm == "a" else "a"
        det = dumps[u.arm].frames[u.frame_id].detections[u.index]
        nearest = None
        if u.nearest_index is not None:
            near_det = dumps[other].frames[u.frame_id].detections[u.nearest_index]
            nearest = {"arm": other, **_detection_summary(near_det, u.nearest_index), "box_iou": u.nearest_iou}
        entries.append(
            {
                "frame_id": u.frame_id,
                "kind": f"unmatched_{u.arm}",
                "score": 1.0 + det.confidence,
                "class_id": det.class_id,
                "class_name": det.class_name,
                "a": _detection_summary(det, u.index) if u.arm == "a" else None,
                "b": _detection_summary(det, u.index) if u.arm == "b" else None,
                "box_iou": None,
                "mask_iou": None,
                "conf_delta": None,
                "nearest": nearest,
            }
        )
    for p in pairing.pairs:
        iou_badness = 1.0 - min(p.box_iou, p.box_iou if p.mask_iou is None else p.mask_iou)
        score = max(iou_badness, p.conf_delta)
        if score <= 0:
            continue
        da = a.frames[p.frame_id].detections[p.index_a]
        db = b.frames[p.frame_id].detections[p.index_b]
        entries.append(
            {
                "frame_id": p.frame_id,
                "kind": "low_iou" if iou_badness >= p.conf_delta else "conf",
                "score": score,
                "class_id": da.class_id,
                "class_name": da.class_name,
                "a": _detection_summary(da, p.index_a),
                "b": _detection_summary(db, p.index_b),
                "box_iou": p.box_iou,
                "mask_iou": p.mask_iou,
                "conf_delta": p.conf_delta,
                "nearest": None,
            }
        )
    entries.sort(
        key=lambda e: (
            -e["score"],
            e["frame_id"],
            e["kind"],
            (e["a"] or e["b"])["index"],
        )
    )
    return entries[:limit]


def _per_class(a: Dump, b: Dump, pairing: Pairing, confidence: float) -> dict[str, dict[str, Any]]:
    classes: dict[int, dict[str, Any]] = {}

    def entry(det: DetectionRecord) -> dict[str, Any]:
        return classes.setdefault(
            det.class_id,
            {"name": det.class_name, "detections_a": 0, "detections_b": 0, "matched": 0, "_deltas": [], "_ious": []},
        )

    # A first so that A's class name wins when the arms disagree on names.
    for key, dump in (("detections_a", a), ("detections_b", b)):
        for frame in dump.frames.values():
            for det in frame.detections:
                if det.confidence >= confidence:
                    entry(det)[key] += 1
    for p in pairing.pairs:
        e = entry(a.frames[p.frame_id].detections[p.index_a])
        e["matched"] += 1
        e["_deltas"].append(p.conf_delta)
        e["_ious"].append(p.box_iou)
    out = {}
    for class_id in sorted(classes):
        e = classes[class_id]
        deltas, ious = e.pop("_deltas"), e.pop("_ious")
        out[str(class_id)] = {
            **e,
            "unmatched_a": e["detections_a"] - e["matched"],
            "unmatched_b": e["detections_b"] - e["matched"],
            "conf_delta_max": _describe(deltas, ["max"])["max"],
            "box_iou_mean": _describe(ious, ["mean"])["mean"],
        }
    return out


def _input_summary(dump: Dump) -> dict[str, Any]:
    return {
        "path": None if dump.path is None else str(dump.path),
        "frames": len(dump.frames),
        "truncated_line": dump.truncated_line,
        "complete": dump.complete,
        "random_weights": dump.random_weights,
    }


def check_testable(*dumps: Dump) -> None:
    """Raise unless every dump holds frames and exercised the switches it turned on:
    a comparison of nothing, or of a fallback with its baseline, must not pass.

    Raises:
        CompareInputError: naming the dump (and arm) and what is missing.
    """
    for dump in dumps:
        if not dump.frames:
            where = dump.path if dump.path is not None else "an in-memory dump"
            raise CompareInputError(f"{where}: the dump holds no frame; there is nothing to compare")
        problem = unexercised_switch(dump)
        if problem is not None:
            raise CompareInputError(problem)


def compare(
    a: Dump,
    b: Dump,
    confidence: float = DEFAULT_CONFIDENCE,
    iou: float = DEFAULT_IOU,
    *,
    min_matched: float = DEFAULT_MIN_MATCHED,
    max_conf_delta: float = DEFAULT_MAX_CONF_DELTA,
    min_mask_iou_p5: float = DEFAULT_MIN_MASK_IOU_P5,
    worst: int = DEFAULT_WORST,
) -> dict[str, Any]:
    """Compare dump ``a`` with dump ``b``; see the module docstring for pairing.

    Args:
        a, b: the two arms (e.g. from :func:`~.dumps.read_dump`).
        confidence: keep detections with ``confidence >=`` this, on both sides.
        iou: minimum box IoU for a pair (inclusive).
        min_matched: gate ``matched_fraction`` = matched / max(detections_a, detections_b) ``>=`` this.
        max_conf_delta: gate ``max_conf_delta`` = max |Δconf| over pairs ``<=`` this.
        min_mask_iou_p5: gate ``mask_iou_p5`` = 5th percentile of mask IoU ``>=`` this.
        worst: how many disagreements to list in ``worst``.

    Returns:
        A JSON-serialisable dict. Counts are over kept detections, in all
        frames of either dump. ``masks_identical`` is the number of matched
        pairs whose RLE masks are identical (two null masks count as
        identical); ``all_masks_identical`` is ``masks_identical == matched``
        (true when nothing matched). ``mask_iou`` covers pairs where at least
        one side has a mask (a missing mask scores 0). A gate whose statistic
        is empty passes with ``vacuous: true``. ``agree_exactly`` means no
        unmatched detection, no frame in only one dump, and every pair with
        identical box, mask and confidence.

    Raises:
        CompareInputError: a dump holds no frame, an arm turned a switch on that
            served no call (see :mod:`.switches`), or a frame present in both dumps
            has different sizes.
    """
    check_testable(a, b)
    pairing = pair_dumps(a, b, confidence, iou)
    pairs = pairing.pairs
    matched = len(pairs)
    unmatched_a = sum(u.arm == "a" for u in pairing.unmatched)
    unmatched_b = len(pairing.unmatched) - unmatched_a
    detections_a, detections_b = matched + unmatched_a, matched + unmatched_b
    conf_delta = _describe([p.conf_delta for p in pairs], ["mean", "p50", "p95", "p99", "max"])
    box_iou = _describe([p.box_iou for p in pairs], ["mean", "min", "p5"])
    mask_ious = _describe([p.mask_iou for p in pairs if p.mask_iou is not None], ["mean", "min", "p5"])
    masks_identical = sum(p.masks_identical for p in pairs)
    denominator = max(detections_a, detections_b)

    gates = {
        "matched_fraction": _gate(matched / denominator if denominator else None, min_matched, ">="),
        "max_conf_delta": _gate(conf_delta["max"], max_conf_delta, "<="),
        "mask_iou_p5": _gate(mask_ious["p5"], min_mask_iou_p5, ">="),
    }
    agree_exactly = (
        not pairing.unmatched
        and not pairing.frames_only_in_a
        and not pairing.frames_only_in_b
        and all(p.conf_delta == 0 and p.boxes_identical and p.masks_identical for p in pairs)
    )
    return {
        "params": {"confidence": confidence, "iou": iou, "worst": worst},
        "inputs": {"a": _input_summary(a), "b": _input_summary(b)},
        "frames": len(pairing.counts),
        "frames_common": len(pairing.frames_common),
        "frames_only_in_a": pairing.frames_only_in_a,
        "frames_only_in_b": pairing.frames_only_in_b,
        "detections_a": detections_a,
        "detections_b": detections_b,
        "matched": matched,
        "unmatched_a": unmatched_a,
        "unmatched_b": unmatched_b,
        "conf_delta": conf_delta,
        "box_iou": box_iou,
        "mask_iou": mask_ious,
        "boxes_identical": sum(p.boxes_identical for p in pairs),
        "masks_identical": masks_identical,
        "all_masks_identical": masks_identical == matched,
        "agree_exactly": agree_exactly,
        "per_class": _per_class(a, b, pairing, confidence),
        "worst": _worst(a, b, pairing, worst),
        "gates": gates,
        "passed": all(g["passed"] for g in gates.values()),
    }


def save_result(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a :func:`compare` result as strict JSON (no NaN) with a trailing newline."""
    Path(path).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def bounded_float(low: float, high: float | None) -> Callable[[str], float]:
    """argparse ``type``: a float in ``[low, high]`` (no upper bound when ``high`` is None)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (low <= value and (high is None or value <= high)):
            upper = "" if high is None else f" and <= {high}"
            raise argparse.ArgumentTypeError(f"must be >= {low}{upper}, got {value}")
        return value

    return parse


def int_at_least(low: int) -> Callable[[str], int]:
    """argparse ``type``: an int >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def add_compare_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``compare`` positionals and options to ``parser`` (e.g. a subcommand parser)."""
    unit = bounded_float(0.0, 1.0)
    parser.add_argument("dump_a", type=Path, help="dump of arm A (JSONL)")
    parser.add_argument("dump_b", type=Path, help="dump of arm B (JSONL)")
    parser.add_argument(
        "--confidence", type=unit, default=DEFAULT_CONFIDENCE, help="keep detections with confidence >= this"
    )
    parser.add_argument("--iou", type=unit, default=DEFAULT_IOU, help="minimum box IoU to pair (inclusive)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the full result as JSON")
    parser.add_argument(
        "--min-matched",
        type=unit,
        default=DEFAULT_MIN_MATCHED,
        help="gate: matched / max(detections A, detections B) >= this",
    )
    parser.add_argument(
        "--max-conf-delta",
        type=bounded_float(0.0, None),
        default=DEFAULT_MAX_CONF_DELTA,
        help="gate: max |confidence A - confidence B| over pairs <= this",
    )
    parser.add_argument(
        "--min-mask-iou-p5",
        type=unit,
        default=DEFAULT_MIN_MASK_IOU_P5,
        help="gate: 5th percentile of mask IoU over pairs >= this",
    )
    parser.add_argument(
        "--worst", type=int_at_least(0), default=DEFAULT_WORST, help="number of worst disagreements to list"
    )
    return parser


def _input_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def run_compare(args: argparse.Namespace) -> int:
    """Run ``compare`` on parsed arguments (see :func:`add_compare_arguments`).

    Returns:
        0 when every gate passes, 1 when a gate fails, 2 on unreadable,
        corrupt or incomparable input (reported as one line on stderr).
    """
    # report imports this module, so import it at call time.
    from .report import print_summary

    try:
        dump_a = read_dump(args.dump_a)
        dump_b = read_dump(args.dump_b)
        result = compare(
            dump_a,
            dump_b,
            args.confidence,
            args.iou,
            min_matched=args.min_matched,
            max_conf_delta=args.max_conf_delta,
            min_mask_iou_p5=args.min_mask_iou_p5,
            worst=args.worst,
        )
    except FileNotFoundError as exc:
        return _input_error(f"{exc.filename}: no such file")
    except (DumpFormatError, CompareInputError) as exc:
        return _input_error(str(exc))
    except OSError as exc:
        return _input_error(f"{exc.filename}: {exc.strerror}")
    print_summary(result)
    if args.json is not None:
        try:
            save_result(result, args.json)
        except OSError as exc:
            return _input_error(f"cannot write {args.json}: {exc.strerror}")
    return EXIT_OK if result["passed"] else EXIT_GATE_FAILED


def build_parser(prog: str = "validate compare") -> argparse.ArgumentParser:
    """Stand-alone parser for ``compare``."""
    return add_compare_arguments(
        argparse.ArgumentParser(prog=prog, description="Compare two detection dumps and gate on their agreement.")
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``validate compare A.jsonl B.jsonl [options]``; returns the exit code (0, 1 or 2)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        # argparse exits 2 on usage errors and 0 after --help; return instead of exiting.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return run_compare(args)
