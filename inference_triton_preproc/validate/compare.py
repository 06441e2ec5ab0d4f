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
import logging
import operator
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .dumps import DetectionRecord, Dump, DumpFormatError, read_dump
from .switches import unexercised_switch
from .pairing import (
    DEFAULT_CONFIDENCE,
    DEFAULT_IOU,
    CompareInputError,
    MatchedPair,
    Pairing,
    UnmatchedDetection,
    box_iou_matrix,
    mask_iou,
    pair_detections,
    pair_dumps,
    save_result,
)
from .report import print_summary

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_IOU",
    "CompareInputError",
    "MatchedPair",
    "Pairing",
    "UnmatchedDetection",
    "box_iou_matrix",
    "compare",
    "mask_iou",
    "pair_detections",
    "pair_dumps",
    "save_result",
]

logger = logging.getLogger(__name__)

DEFAULT_MIN_MATCHED = 0.995
DEFAULT_MAX_CONF_DELTA = 0.05
DEFAULT_MIN_MASK_IOU_P5 = 0.95
DEFAULT_WORST = 20

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2


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


def carries_polygons(dump: Dump) -> bool:
    """Whether any detection of ``dump`` has a polygon (the arm received polygons)."""
    return any(d.polygon is not None for frame in dump.frames.values() for d in frame.detections)


def _polygon_summary(a: Dump, b: Dump, pairs: Sequence[MatchedPair]) -> dict[str, Any] | None:
    """Polygon agreement over matched pairs, or ``None`` unless both dumps carry polygons."""
    if not (carries_polygons(a) and carries_polygons(b)):
        return None
    compared = [p for p in pairs if p.polygons_identical is not None]
    return {
        "compared": len(compared),
        "identical": sum(bool(p.polygons_identical) for p in compared),
        "point_count_differs": sum(p.polygon_shift is None for p in compared),
        "shift_px": _describe([p.polygon_shift for p in compared if p.polygon_shift is not None], ["mean", "max"]),
    }


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
        identical box, mask and confidence. When both dumps carry polygons,
        ``polygons_identical`` counts the matched pairs whose polygons are identical
        (point for point), ``all_polygons_identical`` says whether every pair's are,
        and ``polygons`` holds the counts and the largest point shift per pair in
        pixels (``shift_px``); all three are ``None`` otherwise, and exact agreement
        then also needs identical polygons.

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
    polygons = _polygon_summary(a, b, pairs)
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
        and (polygons is None or polygons["identical"] == matched)
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
        "polygons_identical": None if polygons is None else polygons["identical"],
        "all_polygons_identical": None if polygons is None else polygons["identical"] == matched,
        "polygons": polygons,
        "agree_exactly": agree_exactly,
        "per_class": _per_class(a, b, pairing, confidence),
        "worst": _worst(a, b, pairing, worst),
        "gates": gates,
        "passed": all(g["passed"] for g in gates.values()),
    }


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
