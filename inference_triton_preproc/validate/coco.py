"""COCO study: the model over a COCO-format image set once per preprocessing variant.

Each variant runs in a fresh process (see :mod:`.arm`) and writes a dump with
``frame_id`` = COCO image id. The dumps are turned into COCO results (one
``bbox`` and one ``segm`` file per variant), scored with pycocotools
``COCOeval`` on the same image ids, shown side by side with the deltas against
the ``reference`` variant, and each variant's detections are paired with the
reference's with :func:`.compare.compare`.

Known traps this module avoids:

- model classes are matched to ground-truth categories by NAME, never by
  index; detections of classes the annotations do not have are dropped and
  counted per class name;
- bbox and segm results are separate lists: ``COCO.loadRes`` would otherwise
  give segm results box areas (and box polygons to results without masks);
- ``cocoEval.params.imgIds`` is set to every image id of the annotations for
  every variant, so images without detections count and all variants are
  scored on the same images;
- masks travel as pycocotools RLE made from Fortran-ordered uint8 arrays
  (see :func:`.dumps.encode_mask`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import numbers
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .arm import (
    PLUGIN_FLAG,
    ArmRequest,
    ArmResult,
    ValidateError,
    arm_env,
    create_out_dir,
    cuda_available,
    describe_plugin,
    resolve_model,
    run_arms,
)
from .compare import EXIT_GATE_FAILED, EXIT_OK, compare
from .dumps import Dump, read_dump
from .report import FramesSource, write_report

logger = logging.getLogger(__name__)

REFERENCE = "reference"
_MODE_VAR = "RFDETR_TRITON_PREPROC_MODE"
#: Variant name -> the preprocessing switches of its process.
VARIANTS: dict[str, dict[str, str]] = {
    REFERENCE: {PLUGIN_FLAG: "0"},
    **{f"triton-{mode}": {PLUGIN_FLAG: "1", _MODE_VAR: mode} for mode in ("pil", "cv2", "torch")},
}
DEFAULT_VARIANTS: tuple[str, ...] = tuple(VARIANTS)
IOU_TYPES = ("bbox", "segm")
#: ``COCOeval.stats`` in order: AP over IoU .50:.95 / .50 / .75 and by area, then AR at 1/10/100 detections and by area.
STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


def parse_variants(text: str) -> tuple[str, ...]:
    """argparse type of ``--variants``: known names, duplicates removed, ``reference`` first."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    return (REFERENCE, *dict.fromkeys(name for name in names if name != REFERENCE))


# --------------------------------------------------------------------------- #
# Ground truth
# --------------------------------------------------------------------------- #


@dataclass
class GroundTruth:
    """A validated COCO-format annotation set.

    Attributes:
        coco: the pycocotools index.
        image_ids: every image id, sorted; the ids all variants are scored on.
        paths: image id -> image file.
        category_ids: category name -> category id.
        has_masks: every annotation has a ``segmentation`` (segm can be scored).
    """

    coco: Any
    image_ids: list[int]
    paths: dict[int, Path]
    category_ids: dict[str, int]
    has_masks: bool


def _image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` in pixels from the image header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as exc:
        raise ValidateError(f"cannot read image {path}: {exc}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_list(data: Mapping[str, Any], key: str, required: Sequence[str], source: Path) -> list[dict[str, Any]]:
    items = data.get(key)
    if not isinstance(items, list):
        raise ValidateError(f"annotations {source}: {key!r} must be a list")
    for index, item in enumerate(items):
        missing = [k for k in required if not isinstance(item, dict) or k not in item]
        if missing:
            raise ValidateError(f"annotations {source}: {key}[{index}] lacks {', '.join(repr(k) for k in missing)}")
    return items


def load_ground_truth(annotations: Path, images_dir: Path) -> GroundTruth:
    """Read and check a COCO instances file and find its images.

    ``iscrowd`` defaults to 0 where missing; everything else that COCOeval
    needs must be present.

    Raises:
        ValidateError: unreadable or malformed annotations, duplicate ids or
            category names, dangling references, or missing image files.
    """
    from pycocotools.coco import COCO

    if not images_dir.is_dir():
        raise ValidateError(f"images directory {images_dir} does not exist")
    try:
        data = json.loads(annotations.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValidateError(f"annotations file {annotations} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidateError(f"cannot read annotations {annotations}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValidateError(f"annotations {annotations} are not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValidateError(f"annotations {annotations}: expected a JSON object with images/annotations/categories")
    images = _check_list(data, "images", ("id", "file_name"), annotations)
    categories = _check_list(data, "categories", ("id", "name"), annotations)
    anns = _check_list(data, "annotations", ("id", "image_id", "category_id", "bbox", "area"), annotations)
    image_ids = [img["id"] for img in images]
    if not all(_is_int(i) for i in image_ids) or len(set(image_ids)) != len(image_ids):
        raise ValidateError(f"annotations {annotations}: image ids must be unique integers")
    category_ids: dict[str, int] = {}
    for cat in categories:
        name = str(cat["name"])
        if name in category_ids:
            raise ValidateError(f"annotations {annotations}: category name {name!r} is used twice")
        category_ids[name] = int(cat["id"])
    known_images, known_categories = set(image_ids), set(category_ids.values())
    for ann in anns:
        if ann["image_id"] not in known_images or ann["category_id"] not in known_categories:
            raise ValidateError(
                f"annotations {annotations}: annotation {ann['id']} refers to an unknown image or category"
            )
        ann.setdefault("iscrowd", 0)
    paths = {int(img["id"]): images_dir / str(img["file_name"]) for img in images}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise ValidateError(f"{len(missing)} image file(s) of {annotations} not found, e.g. {missing[0]}")
    for img in images:
        if "height" not in img or "width" not in img:
            # pycocotools needs them to rasterise polygon ground truth.
            img["width"], img["height"] = _image_size(paths[int(img["id"])])
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress on stdout
        coco.createIndex()
    return GroundTruth(
        coco=coco,
        image_ids=sorted(paths),
        paths=paths,
        category_ids=category_ids,
        has_masks=all("segmentation" in ann for ann in anns),
    )


# --------------------------------------------------------------------------- #
# Results and scoring
# --------------------------------------------------------------------------- #


@dataclass
class CocoResults:
    """One variant's detections as COCO results.

    Attributes:
        bbox: ``{"image_id", "category_id", "bbox": [x, y, w, h] (pixels), "score"}`` per detection.
        segm: ``{"image_id", "category_id", "segmentation": RLE, "score"}`` per detection with a mask.
        dropped: class name -> detections dropped because no category has that name.
    """

    bbox: list[dict[str, Any]]
    segm: list[dict[str, Any]]
    dropped: Counter[str]


def to_coco_results(dump: Dump, category_ids: Mapping[str, int]) -> CocoResults:
    """Convert a dump (``frame_id`` = image id) to COCO results, mapping classes by name."""
    results = CocoResults(bbox=[], segm=[], dropped=Counter())
    for image_id in sorted(dump.frames):
        for det in dump.frames[image_id].detections:
            category_id = category_ids.get(det.class_name)
            if category_id is None:
                results.dropped[det.class_name] += 1
                continue
            x1, y1, x2, y2 = det.xyxy
            common = {"image_id": image_id, "category_id": category_id, "score": det.confidence}
            results.bbox.append({**common, "bbox": [x1, y1, x2 - x1, y2 - y1]})
            if det.mask is not None:
                rle = {"size": list(det.mask["size"]), "counts": det.mask["counts"]}
                results.segm.append({**common, "segmentation": rle})
    return results


def _results_index(gt: Any, results: list[dict[str, Any]]) -> Any:
    from pycocotools.coco import COCO

    if results:
        # loadRes adds ids and areas to the dicts it is given.
        return gt.loadRes(copy.deepcopy(results))
    # loadRes cannot take an empty list (it looks at the first result).
    empty = COCO()
    empty.dataset = {**gt.dataset, "annotations": []}
    empty.createIndex()
    return empty


def evaluate(gt: Any, results: list[dict[str, Any]], iou_type: str, image_ids: Sequence[int]) -> dict[str, Any]:
    """Score ``results`` with ``COCOeval`` on exactly ``image_ids``.

    Returns:
        ``{"stats": {name: value or None}, "image_ids": [...], "summary": str}``;
        a statistic is ``None`` where pycocotools reports -1 (no ground truth
        in that area range).
    """
    from pycocotools.cocoeval import COCOeval

    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator = COCOeval(gt, _results_index(gt, results), iou_type)
        evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {name: (None if value < 0 else float(value)) for name, value in zip(STAT_NAMES, evaluator.stats)}
    text = "\n".join(line for line in summary.getvalue().splitlines() if line.startswith(" Average"))
    return {"stats": stats, "image_ids": [int(i) for i in evaluator.params.imgIds], "summary": text}


def stat_deltas(value: Mapping[str, float | None], reference: Mapping[str, float | None]) -> dict[str, float | None]:
    """``value - reference`` per statistic; ``None`` where either is ``None``."""
    deltas: dict[str, float | None] = {}
    for name in STAT_NAMES:
        v, r = value.get(name), reference.get(name)
        deltas[name] = None if v is None or r is None else v - r
    return deltas


# --------------------------------------------------------------------------- #
# Output
# --------------------------------------------------------------------------- #


def _fmt(value: float | None, signed: bool = False) -> Text:
    if value is None:
        return Text("n/a", style="dim")
    if not signed:
        return Text(f"{value:.4f}")
    style = "dim" if value == 0 else ("green" if value > 0 else "red")
    return Text(f"{value:+.4f}", style=style)


def _metrics_table(summary: Mapping[str, Any]) -> Table:
    variants = list(summary["variants"])
    table = Table(title="COCO metrics (deltas against the reference)", title_justify="left")
    table.add_column("metric")
    table.add_column(REFERENCE)
    for name in variants[1:]:
        table.add_column(name)
        table.add_column("Δ")
    for iou_type in IOU_TYPES:
        if summary["variants"][REFERENCE]["scores"][iou_type] is None:
            continue
        for stat in STAT_NAMES:
            row: list[Text] = [Text(f"{iou_type} {stat}")]
            for name in variants:
                row.append(_fmt(summary["variants"][name]["scores"][iou_type]["stats"][stat]))
                if name != REFERENCE:
                    row.append(_fmt(summary["deltas"][name][iou_type][stat], signed=True))
            table.add_row(*row)
    return table


def _variants_table(summary: Mapping[str, Any]) -> Table:
    table = Table(title="Variants", title_justify="left")
    for column in ("variant", "plugin", "detections", "scored", "dropped", "vs reference"):
        table.add_column(column)
    for name, v in summary["variants"].items():
        pair = summary["pairs"].get(name)
        if pair is None:
            verdict = Text("-")
        elif pair["agree_exactly"]:
            verdict = Text("identical", style="bold green")
        else:
            verdict = Text("PASS", style="green") if pair["passed"] else Text("FAIL", style="bold red")
        dropped = ", ".join(f"{k}: {n}" for k, n in sorted(v["dropped"].items())) or "0"
        counts = (str(v["detections"]), str(v["detections_scored"]), dropped)
        table.add_row(name, describe_plugin(v["plugin_installed"]), *counts, verdict)
    return table


def _notices(summary: Mapping[str, Any]) -> list[Text]:
    """Verdict per variant first, then everything that qualifies the numbers."""
    notices = []
    for name, pair in summary["pairs"].items():
        if pair["agree_exactly"]:
            notices.append(
                Text(
                    f"Variant {name} agrees exactly with the reference: all {pair['matched']} detections matched "
                    "with identical boxes, masks and confidences.",
                    style="bold green",
                )
            )
        elif pair["passed"]:
            notices.append(Text(f"Variant {name} agrees with the reference within the gates.", style="green"))
        else:
            failed = ", ".join(gate for gate, g in pair["gates"].items() if not g["passed"])
            notices.append(Text(f"Variant {name} FAILED against the reference: {failed}.", style="bold red"))
    if summary["random_weights"]:
        notices.append(
            Text(
                "The model has RANDOM WEIGHTS: the metrics are meaningless; only the agreement between "
                "variants says something (about preprocessing parity).",
                style="bold yellow",
            )
        )
    for name, v in summary["variants"].items():
        state = v["plugin_installed"]
        if name == REFERENCE and state is True:
            notices.append(Text("Warning: the plugin was active in the reference variant.", style="yellow"))
        elif name != REFERENCE and state is not True:
            notices.append(
                Text(
                    f"Warning: the plugin was {describe_plugin(state)} in variant {name}: "
                    "it ran the stock preprocessing.",
                    style="yellow",
                )
            )
    if not summary["segm_scored"]:
        notices.append(Text("segm not scored: some ground-truth annotations have no segmentation.", style="yellow"))
    return notices


# --------------------------------------------------------------------------- #
# The study
# --------------------------------------------------------------------------- #


def _image_reader(paths: Mapping[int, Path]) -> FramesSource:
    """``frames_source`` for reports: the image of a COCO image id, as OpenCV decodes it (BGR)."""

    def read(image_id: int) -> np.ndarray | None:
        import cv2

        path = paths.get(image_id)
        return None if path is None else cv2.imread(str(path), cv2.IMREAD_COLOR)

    return read


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _score_variant(arm_result: ArmResult, dump: Dump, gt: GroundTruth, out_dir: Path) -> dict[str, Any]:
    """Write one variant's COCO results files and score them; its entry of ``coco.json``."""
    name = arm_result.request.name
    coco_results = to_coco_results(dump, gt.category_ids)
    files = {t: out_dir / f"{name}.{t}.json" for t in IOU_TYPES}
    _write_json(files["bbox"], coco_results.bbox)
    _write_json(files["segm"], coco_results.segm)
    return {
        "env": dict(arm_result.request.env),
        "plugin_installed": (arm_result.model or {}).get("plugin_installed"),
        "dump": str(arm_result.request.dump),
        "results": {t: str(p) for t, p in files.items()},
        "detections": sum(len(f.detections) for f in dump.frames.values()),
        "detections_scored": len(coco_results.bbox),
        "dropped": dict(coco_results.dropped),
        "scores": {
            "bbox": evaluate(gt.coco, coco_results.bbox, "bbox", gt.image_ids),
            "segm": evaluate(gt.coco, coco_results.segm, "segm", gt.image_ids) if gt.has_masks else None,
        },
    }


def _compare_pair(
    reference: Dump,
    variant: Dump,
    reference_path: Path,
    variant_path: Path,
    report_dir: Path,
    confidence: float,
    iou: float,
    frames_source: FramesSource,
) -> dict[str, Any]:
    """Compare a variant's detections with the reference's, write the report; its ``pairs`` entry."""
    result = compare(reference, variant, confidence, iou)
    files = write_report(report_dir, result, reference_path, variant_path, frames_source=frames_source)
    return {
        "report": str(files.html),
        "passed": result["passed"],
        "agree_exactly": result["agree_exactly"],
        "matched": result["matched"],
        "unmatched_a": result["unmatched_a"],
        "unmatched_b": result["unmatched_b"],
        "max_conf_delta": result["conf_delta"]["max"],
        "mask_iou_p5": result["mask_iou"]["p5"],
        "gates": result["gates"],
    }


def run_coco(
    *,
    images: Path,
    annotations: Path,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    model_id: str | None = None,
    model_path: Path | None = None,
    out: Path | None = None,
    confidence: float = 0.4,
    iou: float = 0.5,
    api_key: str | None = None,
    arm_timeout: float | None = None,
    console: Console | None = None,
) -> int:
    """Run the study and write ``coco.json`` plus per-variant files into ``out``.

    Args:
        images: directory of the images named in ``annotations``.
        annotations: COCO instances JSON.
        variants: names from :data:`VARIANTS`; ``reference`` is added first if missing.
        model_id, model_path: the model (default: the embedded random-weight package).
        out: output directory (default ``./validate-out/<timestamp>``).
        confidence: model confidence threshold, also the pairing threshold.
        iou: minimum box IoU to pair detections of two variants.
        api_key: Roboflow API key for ``model_id``.
        arm_timeout: seconds after which a variant's process is killed.
        console: where tables go (default: stdout).

    Returns:
        0 when every variant agrees with the reference within the gates, else 1.

    Raises:
        ValidateError: bad input or a failed variant (partial results stay in ``out``).
    """
    console = console or Console()
    variants = parse_variants(",".join(variants))
    gt = load_ground_truth(annotations, images)
    model = resolve_model(model_id, model_path)
    out_dir = create_out_dir(out)
    manifest = out_dir / "images.json"
    _write_json(manifest, [{"id": i, "path": str(gt.paths[i].resolve())} for i in gt.image_ids])
    interpret = not cuda_available()
    requests = [
        ArmRequest(
            name=name,
            label=f"variant {name}",
            env=arm_env(VARIANTS[name], interpret=interpret),
            model=model,
            dump=out_dir / f"{name}.jsonl",
            log=out_dir / f"arm-{name}.log",
            confidence=confidence,
            images=manifest,
            api_key=api_key,
        )
        for name in variants
    ]
    arm_results = run_arms(requests, len(gt.image_ids), arm_timeout, Console(stderr=True))

    dump_paths = {r.request.name: r.request.dump for r in arm_results}
    dumps = {name: read_dump(path) for name, path in dump_paths.items()}
    for name, dump in dumps.items():
        if set(dump.frames) != set(gt.image_ids):
            raise ValidateError(f"variant {name}: dump {dump_paths[name]} does not cover every image of {annotations}")
    summary: dict[str, Any] = {
        "annotations": str(annotations),
        "images": str(images),
        "image_ids": gt.image_ids,
        "model": model,
        "random_weights": any(d.random_weights for d in dumps.values()),
        "confidence": confidence,
        "iou": iou,
        "segm_scored": gt.has_masks,
        "variants": {},
        "deltas": {},
        "pairs": {},
    }
    for arm_result in arm_results:
        name = arm_result.request.name
        summary["variants"][name] = _score_variant(arm_result, dumps[name], gt, out_dir)
    reference = summary["variants"][REFERENCE]["scores"]
    read_image = _image_reader(gt.paths)
    for name in variants[1:]:
        scores = summary["variants"][name]["scores"]
        summary["deltas"][name] = {
            t: None if scores[t] is None else stat_deltas(scores[t]["stats"], reference[t]["stats"]) for t in IOU_TYPES
        }
        summary["pairs"][name] = _compare_pair(
            dumps[REFERENCE], dumps[name], dump_paths[REFERENCE], dump_paths[name],
            out_dir / "pairs" / f"{REFERENCE}-vs-{name}", confidence, iou, read_image,
        )  # fmt: skip
    _write_json(out_dir / "coco.json", summary)
    console.print(_metrics_table(summary))
    console.print(_variants_table(summary))
    for notice in _notices(summary):
        console.print(notice)
    console.print(f"Summary: {out_dir / 'coco.json'}; pair reports in {out_dir / 'pairs'}")
    return EXIT_OK if all(pair["passed"] for pair in summary["pairs"].values()) else EXIT_GATE_FAILED
