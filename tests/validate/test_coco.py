"""``validate coco``: a COCO-format set made from real photos, scored per preprocessing variant.

The set: scikit-image's astronaut and rocket (JPEG), coffee and chelsea (PNG)
with hand-placed ground-truth shapes. Category ids are deliberately not the
model's class indices + 1, so only matching by NAME scores anything; "unicorn"
is a category the model never predicts, and chelsea has no annotation at all.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from skimage import data, draw

from inference_triton_preproc.validate import cli
from inference_triton_preproc.validate.arm import ValidateError
from inference_triton_preproc.validate.coco import (
    STAT_NAMES,
    evaluate,
    load_ground_truth,
    parse_variants,
    stat_deltas,
    to_coco_results,
)
from inference_triton_preproc.validate.compare import EXIT_OK, EXIT_USAGE
from inference_triton_preproc.validate.dumps import DetectionRecord, Dump, FrameRecord, encode_mask, read_dump

CATEGORIES = [
    {"id": 1, "name": "random-2"},
    {"id": 2, "name": "unicorn"},
    {"id": 4, "name": "random-0"},
    {"id": 9, "name": "random-1"},
]
CATEGORY_IDS = {c["name"]: c["id"] for c in CATEGORIES}


def _ellipse(shape: tuple[int, int], cy: int, cx: int, ry: int, rx: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    rr, cc = draw.ellipse(cy, cx, ry, rx, shape=shape)
    mask[rr, cc] = True
    return mask


def _rle(mask: np.ndarray) -> dict[str, Any]:
    # pycocotools wants uint8 in Fortran order; a C-ordered bool array encodes garbage.
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _annotation(
    ann_id: int, image_id: int, category: str, mask: np.ndarray, polygon: list[float] | None = None
) -> dict[str, Any]:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": CATEGORY_IDS[category],
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": float(mask.sum()),
        "iscrowd": 0,
        "segmentation": [polygon] if polygon is not None else _rle(mask),
    }


@pytest.fixture(scope="session")
def coco_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("coco")
    images_dir = root / "images"
    images_dir.mkdir()
    photos = {11: ("astronaut", "jpg"), 12: ("rocket", "jpg"), 13: ("coffee", "png"), 14: ("chelsea", "png")}
    images, annotations = [], []
    for image_id, (name, ext) in photos.items():
        bgr = np.ascontiguousarray(getattr(data, name)()[..., ::-1])
        file_name = f"{name}.{ext}"
        assert cv2.imwrite(str(images_dir / file_name), bgr)
        images.append({"id": image_id, "file_name": file_name})
        if name != "coffee":  # coffee's size is left for the loader to read from the file
            images[-1].update(height=bgr.shape[0], width=bgr.shape[1])
    shape = {11: (512, 512), 12: (427, 640), 13: (400, 600), 14: (300, 451)}
    annotations.append(_annotation(1, 11, "random-0", _ellipse(shape[11], 120, 250, 70, 55)))
    unicorn = np.zeros(shape[11], dtype=bool)
    unicorn[300:480, 40:200] = True
    annotations.append(_annotation(2, 11, "unicorn", unicorn))
    # A polygon ground truth (the rocket's body), rasterised the way pycocotools does for the area.
    polygon = [300.0, 40.0, 340.0, 40.0, 350.0, 400.0, 290.0, 400.0]
    rocket = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([polygon], *shape[12]))).astype(bool)
    annotations.append(_annotation(3, 12, "random-1", rocket, polygon))
    annotations.append(_annotation(4, 13, "random-2", _ellipse(shape[13], 200, 290, 120, 150)))
    annotations.append(_annotation(5, 13, "random-0", _ellipse(shape[13], 60, 80, 30, 40)))
    gt = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    path = root / "instances.json"
    path.write_text(json.dumps(gt))
    return {"images": images_dir, "annotations": path, "root": root}


# --------------------------------------------------------------------------- #
# Scoring (no model)
# --------------------------------------------------------------------------- #


def _perfect_results(gt: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """Results equal to the ground truth: bbox and segm lists as COCO expects them."""
    bbox, segm = [], []
    shapes = {img["id"]: (img["height"], img["width"]) for img in gt["images"] if "height" in img}
    for ann in gt["annotations"]:
        common = {"image_id": ann["image_id"], "category_id": ann["category_id"], "score": 0.9}
        bbox.append({**common, "bbox": ann["bbox"]})
        seg = ann["segmentation"]
        if isinstance(seg, list):
            seg = mask_utils.merge(mask_utils.frPyObjects(seg, *shapes[ann["image_id"]]))
            seg = {"size": seg["size"], "counts": seg["counts"].decode("ascii")}
        segm.append({**common, "segmentation": seg})
    return bbox, segm


def test_perfect_results_score_one_on_every_image(coco_set: dict[str, Path]) -> None:
    gt = load_ground_truth(coco_set["annotations"], coco_set["images"])
    assert gt.image_ids == [11, 12, 13, 14] and gt.has_masks
    assert (gt.coco.imgs[13]["height"], gt.coco.imgs[13]["width"]) == (400, 600)  # read from the file
    bbox, segm = _perfect_results(json.loads(coco_set["annotations"].read_text()))
    for iou_type, results in (("bbox", bbox), ("segm", segm)):
        scored = evaluate(gt.coco, results, iou_type, gt.image_ids)
        assert scored["image_ids"] == [11, 12, 13, 14]
        assert list(scored["stats"]) == list(STAT_NAMES)
        assert scored["stats"]["AP"] == pytest.approx(1.0) and scored["stats"]["AR100"] == pytest.approx(1.0)
        assert scored["stats"]["AP_small"] is None  # no small ground truth: pycocotools' -1 becomes None


def test_no_detections_still_scores_every_image(coco_set: dict[str, Path]) -> None:
    gt = load_ground_truth(coco_set["annotations"], coco_set["images"])
    scored = evaluate(gt.coco, [], "segm", gt.image_ids)
    assert scored["image_ids"] == gt.image_ids
    assert scored["stats"]["AP"] == 0.0 and scored["stats"]["AR100"] == 0.0


def test_results_map_classes_by_name_and_count_the_dropped() -> None:
    mask = np.zeros((20, 30), dtype=bool)
    mask[2:10, 5:25] = True
    dets = (
        DetectionRecord(0, "random-0", 0.9, (5.0, 2.0, 25.0, 10.0), encode_mask(mask)),
        DetectionRecord(1, "ghost", 0.8, (0.0, 0.0, 4.0, 4.0), None),
        DetectionRecord(2, "random-2", 0.7, (1.0, 1.0, 3.0, 5.0), None),
        DetectionRecord(1, "ghost", 0.6, (0.0, 0.0, 4.0, 4.0), None),
    )
    dump = Dump(frames={42: FrameRecord(42, 30, 20, dets), 7: FrameRecord(7, 30, 20, ())})
    results = to_coco_results(dump, CATEGORY_IDS)
    assert results.dropped == {"ghost": 2}
    assert results.bbox == [
        {"image_id": 42, "category_id": 4, "score": 0.9, "bbox": [5.0, 2.0, 20.0, 8.0]},
        {"image_id": 42, "category_id": 1, "score": 0.7, "bbox": [1.0, 1.0, 2.0, 4.0]},
    ]
    assert [r["category_id"] for r in results.segm] == [4]
    assert mask_utils.area(results.segm[0]["segmentation"]) == mask.sum()


def test_deltas_and_variant_names() -> None:
    ref = dict.fromkeys(STAT_NAMES, 0.5) | {"AP_small": None}
    got = dict.fromkeys(STAT_NAMES, 0.75) | {"AP_small": 0.1}
    deltas = stat_deltas(got, ref)
    assert deltas["AP"] == 0.25 and deltas["AP_small"] is None and list(deltas) == list(STAT_NAMES)
    assert parse_variants("triton-pil,triton-pil") == ("reference", "triton-pil")
    assert parse_variants("triton-cv2,reference") == ("reference", "triton-cv2")
    with pytest.raises(Exception, match="unknown variant"):
        parse_variants("reference,triton-fast")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda gt: gt["annotations"][0].pop("area"), "lacks 'area'"),
        (lambda gt: gt["categories"].append({"id": 99, "name": "random-0"}), "used twice"),
        (lambda gt: gt["images"][0].update(file_name="gone.jpg"), "not found"),
        (lambda gt: gt["annotations"][0].update(category_id=1234), "unknown image or category"),
    ],
    ids=["no-area", "duplicate-name", "missing-image", "dangling-category"],
)
def test_bad_ground_truth(coco_set: dict[str, Path], tmp_path: Path, mutate: Any, message: str) -> None:
    gt = json.loads(coco_set["annotations"].read_text())
    mutate(gt)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(ValidateError, match=message):
        load_ground_truth(path, coco_set["images"])


def test_bad_input_exits_2_with_one_line(
    coco_set: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    for gt_file, message in ((tmp_path / "none.json", "does not exist"), (broken, "not valid JSON")):
        rc = cli.main(["coco", "--images", str(coco_set["images"]), "--annotations", str(gt_file)])
        assert rc == EXIT_USAGE
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert cli.main(["coco", "--images", "x", "--annotations", "y", "--variants", "reference,fast"]) == EXIT_USAGE
    assert "unknown variant" in capsys.readouterr().err


# --------------------------------------------------------------------------- #
# End to end: two variants in fresh processes
# --------------------------------------------------------------------------- #


@pytest.mark.slow
def test_coco_study_reference_vs_triton_pil(
    coco_set: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc = cli.main(
        ["coco", "--images", str(coco_set["images"]), "--annotations", str(coco_set["annotations"])]
        + ["--variants", "reference,triton-pil", "--out", str(out)]
    )
    stdout = capsys.readouterr().out
    summary = json.loads((out / "coco.json").read_text())
    assert rc == EXIT_OK, stdout
    assert summary["image_ids"] == [11, 12, 13, 14]
    assert summary["random_weights"] is True and "RANDOM WEIGHTS" in stdout
    assert list(summary["variants"]) == ["reference", "triton-pil"]
    for name, variant in summary["variants"].items():
        assert variant["env"]["RFDETR_USE_TRITON_PREPROC"] == ("0" if name == "reference" else "1")
        if name != "reference":
            assert variant["env"]["RFDETR_TRITON_PREPROC_MODE"] == "pil"
        for iou_type in ("bbox", "segm"):
            scores = variant["scores"][iou_type]
            assert list(scores["stats"]) == list(STAT_NAMES)  # all 12 statistics
            assert all(v is None or 0.0 <= v <= 1.0 for v in scores["stats"].values())
            assert scores["image_ids"] == [11, 12, 13, 14]  # same images for every variant
            results = json.loads(Path(variant["results"][iou_type]).read_text())
            assert {r["category_id"] for r in results} <= {1, 4, 9}  # by name; "unicorn" (2) never predicted
        dump = read_dump(variant["dump"])
        assert sorted(dump.frames) == [11, 12, 13, 14]  # frame_id = COCO image id
        assert variant["detections"] == variant["detections_scored"] + sum(variant["dropped"].values())
    deltas = summary["deltas"]["triton-pil"]
    assert set(deltas) == {"bbox", "segm"} and all(list(d) == list(STAT_NAMES) for d in deltas.values())
    pair = summary["pairs"]["triton-pil"]
    assert pair["passed"] is True and pair["agree_exactly"] is True
    assert all(v in (0.0, None) for d in deltas.values() for v in d.values())
    assert Path(pair["report"]).is_file()
    assert "COCO metrics" in stdout and "Variant triton-pil agrees exactly with the reference" in stdout


def test_copy_of_ground_truth_is_not_mutated_by_scoring(coco_set: dict[str, Path]) -> None:
    gt = load_ground_truth(coco_set["annotations"], coco_set["images"])
    bbox, _ = _perfect_results(json.loads(coco_set["annotations"].read_text()))
    before = copy.deepcopy(bbox)
    evaluate(gt.coco, bbox, "bbox", gt.image_ids)
    assert bbox == before  # loadRes adds ids and areas; the caller's list stays as written to disk
