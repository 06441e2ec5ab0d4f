"""Realistic dumps built from scikit-image sample images, and a mutated copy with known differences."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from skimage import color, data, filters, measure, morphology

from inference_triton_preproc.validate.compare import box_iou_matrix
from inference_triton_preproc.validate.dumps import DetectionRecord, Dump, FrameRecord, decode_mask, encode_mask

CLASS_NAMES = ("coin", "dark", "blob")
MIN_AREA = 300


def _regions(binary: np.ndarray) -> list[np.ndarray]:
    """Connected components as full-frame masks, largest first, with pairwise box IoU < 0.3.

    Well separated boxes keep the mutations below from changing which
    detections pair, so the expected numbers can be derived by hand.
    """
    labels = measure.label(binary)
    regions = sorted((r for r in measure.regionprops(labels) if r.area >= MIN_AREA), key=lambda r: -r.area)
    kept: list[Any] = []
    for r in regions:
        box = np.array([[r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]]], dtype=np.float64)
        kept_boxes = np.array([[k.bbox[1], k.bbox[0], k.bbox[3], k.bbox[2]] for k in kept], dtype=np.float64)
        if not kept or box_iou_matrix(box, kept_boxes).max() < 0.3:
            kept.append(r)
    return [labels == r.label for r in kept]


def _frame(frame_id: int, masks: list[np.ndarray], rng: np.random.Generator) -> FrameRecord:
    height, width = masks[0].shape
    detections = []
    for k, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        class_id = k % len(CLASS_NAMES)
        detections.append(
            DetectionRecord(
                class_id=class_id,
                class_name=CLASS_NAMES[class_id],
                # float32 like a model output; all above the default 0.4 threshold.
                confidence=float(np.float32(rng.uniform(0.45, 0.95))),
                xyxy=(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)),
                mask=encode_mask(mask),
            )
        )
    return FrameRecord(frame_id=frame_id, width=width, height=height, detections=tuple(detections))


@pytest.fixture(scope="session")
def realistic() -> dict[str, Any]:
    """A 4-frame dump (coins, astronaut dark regions, mirrored coins, empty) and its BGR frames."""
    coins = data.coins()
    coins_bw = morphology.remove_small_objects(
        morphology.binary_closing(coins > filters.threshold_otsu(coins), morphology.disk(2)), MIN_AREA
    )
    astronaut = data.astronaut()
    astro_bw = morphology.binary_opening(color.rgb2gray(astronaut) < 0.35, morphology.disk(2))
    rng = np.random.default_rng(1234)
    coin_masks = _regions(coins_bw)
    frames = [
        _frame(0, coin_masks, rng),
        _frame(1, _regions(astro_bw), rng),
        _frame(2, [np.fliplr(m) for m in coin_masks], rng),
        FrameRecord(frame_id=3, width=coins.shape[1], height=coins.shape[0]),
    ]
    coins_bgr = np.ascontiguousarray(np.repeat(coins[:, :, None], 3, axis=2))
    images = {
        0: coins_bgr,
        1: np.ascontiguousarray(astronaut[:, :, ::-1]),
        2: np.ascontiguousarray(coins_bgr[:, ::-1]),
        3: coins_bgr,
    }
    return {"dump": Dump(frames={f.frame_id: f for f in frames}), "images": images}


def _replace_detection(frame: FrameRecord, index: int, **changes: Any) -> FrameRecord:
    dets = list(frame.detections)
    dets[index] = dataclasses.replace(dets[index], **changes)
    return dataclasses.replace(frame, detections=tuple(dets))


def _drop_detections(frame: FrameRecord, indices: set[int]) -> FrameRecord:
    return dataclasses.replace(frame, detections=tuple(d for k, d in enumerate(frame.detections) if k not in indices))


@pytest.fixture(scope="session")
def mutated(realistic: dict[str, Any]) -> dict[str, Any]:
    """Arm B = arm A with known mutations; ``expected`` holds what compare must report."""
    a: Dump = realistic["dump"]
    f0, f1, f2 = a.frames[0], a.frames[1], a.frames[2]
    conf_deltas = {1: 0.013, 2: -0.021, 3: 0.037}
    for k, delta in conf_deltas.items():
        f0 = _replace_detection(f0, k, confidence=f0.detections[k].confidence + delta)
    f0 = _drop_detections(f0, {0, 5})

    # Horizontal shift by s of a w-wide box: IoU = (w - s) / (w + s).
    expected_box_ious = []
    for k, fraction in ((0, 0.1), (1, 0.2)):
        x1, y1, x2, y2 = f1.detections[k].xyxy
        shift = fraction * (x2 - x1)
        expected_box_ious.append(((x2 - x1) - shift) / ((x2 - x1) + shift))
        f1 = _replace_detection(f1, k, xyxy=(x1 + shift, y1, x2 + shift, y2))
    f1 = _replace_detection(f1, 2, class_id=7, class_name="relabelled")

    original_mask = decode_mask(f2.detections[0].mask)
    eroded = morphology.binary_erosion(original_mask, morphology.disk(3))
    f2 = _replace_detection(f2, 0, mask=encode_mask(eroded))
    f2 = _replace_detection(f2, 1, confidence=0.3)  # falls below the 0.4 threshold

    extra = dataclasses.replace(a.frames[0], frame_id=10, detections=a.frames[0].detections[:2])
    b = Dump(frames={0: f0, 1: f1, 2: f2, 3: a.frames[3], 10: extra})

    total_a = sum(len(f.detections) for f in a.frames.values())
    matched = total_a - 2 - 1 - 1  # dropped, below threshold, relabelled
    # The eroded mask is a subset of the original, so IoU = area ratio.
    mask_ious = [1.0] * (matched - 1) + [float(eroded.sum() / original_mask.sum())]
    expected = {
        "frames": 5,
        "frames_only_in_a": [],
        "frames_only_in_b": [10],
        "detections_a": total_a,
        "detections_b": total_a - 2 - 1 + 2,
        "matched": matched,
        "unmatched_a": 4,
        "unmatched_b": 1 + 2,
        "conf_delta_max": max(abs(d) for d in conf_deltas.values()),
        "conf_changed": len(conf_deltas),
        "box_iou_min": min(expected_box_ious),
        "mask_iou_min": min(mask_ious),
        "mask_iou_p5": float(np.percentile(mask_ious, 5)),
        "boxes_identical": matched - 2,
        "masks_identical": matched - 1,
    }
    return {"a": a, "b": b, "expected": expected, "images": realistic["images"]}
