"""The workflow pipeline with both switches off vs on, and the block's sv.Detections conversion, side by side.

A clip is made from the bundled real video (frames resized to ``--size``, 1080p by
default) and run through ``InferencePipeline.init_with_workflow`` with a one-step
workflow: ``roboflow_core/roboflow_instance_segmentation_model@v3`` on the model
(the embedded random-weight RF-DETR seg nano package unless ``--model``). Every arm
is a fresh process (the switches are read at import):

* ``off`` / ``on``: ``RFDETR_USE_TRITON_PREPROC`` and ``RFDETR_TRITON_FULLPOSTPROC``
  both 0 / both 1. Frames per second over the frames after ``--warmup`` (first to last
  prediction), and the time of each call of the block's conversion
  (``convert_inference_detections_batch_to_sv_detections``, timed where the block
  calls it: stock in ``off``, the plugin's in ``on``). The ``sv.Detections`` of each
  frame are kept and compared between the two arms field by field (fresh detection ids
  by form).
* ``conversion`` (switches on): each conversion call also runs the host's stock
  function on a copy of the same responses, in alternating order, timing both and
  checking the results equal (detection ids too: same responses). Where the adapter
  left a frame's points out (the block's responses are private), the copy gets them
  back first, as the plugin rebuilds them for any reader: the stock dump.

Each arm also counts the frames whose responses left their points out.

``off`` and ``on`` alternate ``--runs`` times; the JSON holds every run, the medians and
the targets (fps ratio >= 4, conversion time <= 15 % of stock)::

    python benchmarks/workflow_conversion.py --json out.json               # 1080p, GPU
    python benchmarks/workflow_conversion.py --size 192x144 --frames 3 --warmup 1 --runs 1 --json tiny.json
    python benchmarks/workflow_conversion.py --table out.json                # the README table

The tiny form runs on a CPU (CI); the numbers mean something on a GPU host.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FPS_TARGET = 4.0
CONVERSION_TARGET = 0.15
SWITCHES = ("RFDETR_USE_TRITON_PREPROC", "RFDETR_TRITON_FULLPOSTPROC")
HOST_ENV = {
    "ALLOW_INFERENCE_MODELS_DIRECTLY_ACCESS_LOCAL_PACKAGES": "True",
    "ALLOW_INFERENCE_MODELS_UNTRUSTED_PACKAGES": "True",
    "DISABLE_VERSION_CHECK": "True",
}
BLOCK_MODULE = "roboflow_workflows.core_steps.models.roboflow.instance_segmentation.v3"
CONVERT = "convert_inference_detections_batch_to_sv_detections"


def make_clip(path: Path, size: tuple[int, int], frames: int) -> Path:
    """Write the first ``frames`` frames of the bundled clip, resized to ``size`` (width, height), as mp4v."""
    import cv2

    from inference_triton_preproc.validate.default_model import load_sample_frames

    source = load_sample_frames(limit=frames)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
    try:
        for frame in source:
            writer.write(cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR))
    finally:
        writer.release()
    return path


def workflow(model: str) -> dict[str, Any]:
    """One block step on ``$inputs.image``, its predictions as the output."""
    step = {"type": "roboflow_core/roboflow_instance_segmentation_model@v3", "name": "seg", "images": "$inputs.image"}
    return {
        "version": "1.0",
        "inputs": [{"type": "InferenceImage", "name": "image"}],
        "steps": [{**step, "model_id": model}],
        "outputs": [{"type": "JsonField", "name": "predictions", "selector": "$steps.seg.predictions"}],
    }


# --------------------------------------------------------------------------- #
# Child: one arm
# --------------------------------------------------------------------------- #


def _count_dumped_point_reads(log: dict[str, list[Any]]) -> None:
    """Log each frame the plugin fills from dumped points (not from the adapter's polygons)."""
    from inference_triton_preproc.plugin import workflows

    fill = workflows.fill_polygon_masks

    def fill_polygon_masks(points: Any, *args: Any, **kwargs: Any) -> Any:
        log["dumped_point_reads"].append(len(points))
        return fill(points, *args, **kwargs)

    workflows.fill_polygon_masks = fill_polygon_masks


def _count_point_less_frames(log: dict[str, list[Any]]) -> None:
    """Log each response the adapter surface makes with its points left out (polygons kept instead)."""
    from inference_triton_preproc.plugin import inference_adapter

    keep = inference_adapter.keep_polygons

    def keep_polygons(owner: Any, pairs: Any, points_omitted: bool = False) -> None:
        if points_omitted:
            log["point_less_frames"].append(len(pairs))
        keep(owner, pairs, points_omitted=points_omitted)

    inference_adapter.keep_polygons = keep_polygons


def _timed_conversion(module: Any, compare: bool, log: dict[str, list[Any]]) -> None:
    """Time each conversion call of the block where it calls it; with ``compare``, run the stock one beside it."""
    import numpy as np
    from roboflow_workflows.core_steps.common import utils

    from inference_triton_preproc.plugin import workflows
    from inference_triton_preproc.validate.sv_detections import detections_differences

    current = getattr(module, CONVERT)
    stock = utils.convert_inference_detections_batch_to_sv_detections

    def convert(predictions: Any, *args: Any, **kwargs: Any) -> Any:
        key = kwargs.get("predictions_key", args[0] if args else "predictions")
        spare = copy.deepcopy(predictions) if compare else None
        started = time.perf_counter()
        result = current(predictions, *args, **kwargs)
        log["ms"].append((time.perf_counter() - started) * 1e3)
        log["detections"].append(sum(len(d) for d in result))
        if compare:
            # Alternate which runs first so neither always meets the colder caches.
            if len(log["stock_ms"]) % 2:
                again = copy.deepcopy(spare)
                started = time.perf_counter()
                result = current(again, *args, **kwargs)
                log["ms"][-1] = (time.perf_counter() - started) * 1e3
            stock_input = workflows._with_all_points(spare, key)
            started = time.perf_counter()
            expected = stock(stock_input, *args, **kwargs)
            log["stock_ms"].append((time.perf_counter() - started) * 1e3)
            log["differences"].extend(line for a, b in zip(expected, result) for line in detections_differences(a, b))
            log["masks_px"].append(int(sum(np.count_nonzero(d.mask) for d in result if d.mask is not None)))
            log["fill_floor_ms"].append(_fill_floor_ms(stock_input))
        return result

    setattr(module, CONVERT, convert)


def _fill_floor_ms(predictions: Any) -> float:
    """The time of filling the frames' polygons alone into zeroed full-frame masks, in ms.

    Both the stock conversion and the plugin's fill every polygon with ``cv2.fillPoly``
    on a full-frame canvas; here the int32 vertex arrays are made beforehand (untimed)
    and :func:`~inference_triton_preproc.plugin.polygons.fill_polygons` fills them as the
    plugin does (side by side on the shared pool): what an exact conversion through
    ``fillPoly`` on this host cannot go below.
    """
    from roboflow_workflows.core_steps.common.utils import filter_out_invalid_polygons

    from inference_triton_preproc.plugin.polygons import fill_polygons, polygon_slices, polygon_vertices

    jobs = []
    for frame in predictions:
        polygons = [p["points"] for p in filter_out_invalid_polygons(predictions=frame["predictions"])]
        jobs.append((frame["image"], polygon_slices(*polygon_vertices(polygons))))
    started = time.perf_counter()
    for image, polygons in jobs:
        fill_polygons(polygons, width=int(image["width"]), height=int(image["height"]))
    return (time.perf_counter() - started) * 1e3


def run_arm(args: argparse.Namespace) -> dict[str, Any]:
    """Run the workflow pipeline over the clip in this process; returns the arm's numbers."""
    import importlib

    from inference import InferencePipeline

    from inference_triton_preproc.plugin import fallbacks

    module = importlib.import_module(BLOCK_MODULE)
    log: dict[str, list[Any]] = {"ms": [], "detections": [], "stock_ms": [], "differences": [], "masks_px": [], "fill_floor_ms": [],
                                 "dumped_point_reads": [], "point_less_frames": []}
    _timed_conversion(module, compare=args.arm == "conversion", log=log)
    _count_dumped_point_reads(log)
    if args.arm != "off":
        _count_point_less_frames(log)
    outputs: list[Any] = []
    stamps: list[float] = []

    def on_prediction(result: Any, frame: Any) -> None:
        stamps.append(time.perf_counter())
        outputs.append(result["predictions"])

    pipeline = InferencePipeline.init_with_workflow(
        video_reference=args.video, workflow_specification=workflow(args.model), on_prediction=on_prediction
    )
    pipeline.start()
    pipeline.join()
    timed = stamps[args.warmup :]
    fps = (len(timed) - 1) / (timed[-1] - timed[0]) if len(timed) > 1 else None
    if args.dump:
        with open(args.dump, "wb") as handle:
            pickle.dump(outputs, handle)
    return {
        "arm": args.arm,
        "frames": len(outputs),
        "fps": fps,
        "conversion_ms": log["ms"][args.warmup :],
        "stock_conversion_ms": log["stock_ms"][args.warmup :],
        "fill_floor_ms": log["fill_floor_ms"][args.warmup :],
        "detections_per_frame": log["detections"],
        "mask_pixels_per_frame": log["masks_px"],
        "differences": log["differences"][:20],
        "calls": fallbacks.call_counts(),
        # Frames whose masks the plugin filled from dumped points instead of the adapter's polygons.
        "dumped_point_reads": len(log["dumped_point_reads"]),
        # Frames whose responses the adapter made without points, the polygons kept instead.
        "point_less_frames": len(log["point_less_frames"]),
    }


# --------------------------------------------------------------------------- #
# Parent
# --------------------------------------------------------------------------- #


def _arm_env(arm: str) -> dict[str, str]:
    env = {**os.environ, **HOST_ENV}
    for name in SWITCHES:
        env[name] = "0" if arm == "off" else "1"
    return env


def spawn_arm(arm: str, args: argparse.Namespace, dump: Path | None) -> dict[str, Any]:
    """One arm in a fresh interpreter; its JSON result."""
    command = [sys.executable, __file__, "--arm", arm, "--video", str(args.video), "--model", args.model]
    command += ["--warmup", str(args.warmup)]
    if dump is not None:
        command += ["--dump", str(dump)]
    done = subprocess.run(command, env=_arm_env(arm), capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"arm {arm} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1])


def compare_dumps(off: Path, on: Path) -> dict[str, Any]:
    """The two arms' sv.Detections, frame by frame (detection ids are fresh uuids on each side)."""
    from inference_triton_preproc.validate.sv_detections import detections_differences

    with open(off, "rb") as handle:
        a = pickle.load(handle)
    with open(on, "rb") as handle:
        b = pickle.load(handle)
    differences = [f"frames: {len(a)} vs {len(b)}"] if len(a) != len(b) else []
    for index, (x, y) in enumerate(zip(a, b)):
        differences += [f"frame {index}: {line}" for line in detections_differences(x, y, fresh_ids=True)]
    return {"frames": min(len(a), len(b)), "detections": sum(len(x) for x in a), "identical": not differences,
            "differences": differences[:20]}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _environment() -> dict[str, Any]:
    from importlib import metadata

    import torch

    versions = {name: metadata.version(name) for name in ("inference", "inference-models", "roboflow-workflows",
                                                            "supervision", "opencv-python", "numpy", "torch")
                if _installed(name)}
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"device": device, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "versions": versions}


def _installed(name: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def table(report: dict[str, Any]) -> str:
    """The README's Markdown table of one report."""
    s, env, config = report["summary"], report["environment"], report["config"]

    def number(value: float | None, unit: str = "", digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}{unit}"

    frames = report["conversion"]["detections_per_frame"]
    rows = [
        ("pipeline fps, both switches off", number(s["fps_off"])),
        ("pipeline fps, both switches on", number(s["fps_on"])),
        (f"fps ratio (target >= {FPS_TARGET:g}x)", number(s["fps_ratio"], "x") + (" met" if s["fps_met"] else " not met")),
        ("block conversion, stock (median ms per frame)", number(s["conversion_ms_stock"])),
        ("block conversion, ours (median ms per frame)", number(s["conversion_ms_ours"])),
        (f"ours / stock (target <= {CONVERSION_TARGET:.0%})",
         number(None if s["conversion_ratio"] is None else 100 * s["conversion_ratio"], " %", 1)
         + (" met" if s["conversion_met"] else " not met")),
        ("floor: the masks' fillPoly calls alone, / stock",
         number(s.get("fill_floor_ms")) + " ms, "
         + number(None if s.get("fill_floor_ratio") is None else 100 * s["fill_floor_ratio"], " %", 1)),
        ("detections per frame (min-max)", f"{min(frames, default=0)}-{max(frames, default=0)}"),
        ("frames whose responses left their points out (on arm)",
         f"{s.get('point_less_frames', 'n/a')} of {config['frames']}"),
        ("arms identical (every frame, every field)", "yes" if s["arms_identical"] else "NO"),
        ("conversion identical to stock (same responses)", "yes" if s["conversion_identical"] else "NO"),
    ]
    head = (f"{env['device']}, {config['size'][0]}x{config['size'][1]}, {config['frames']} frames "
            f"({config['warmup']} warm-up), {config['runs']} off/on pairs, model {config['model']}")
    return "\n".join([head, "", "| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1920x1080", help="clip frame size WIDTHxHEIGHT (default 1920x1080)")
    parser.add_argument("--frames", type=int, default=48, help="frames of the clip (the bundled video has 48)")
    parser.add_argument("--warmup", type=int, default=5, help="first frames left out of fps and conversion times")
    parser.add_argument("--runs", type=int, default=2, help="off/on pairs, alternating")
    parser.add_argument("--model", default=None, help="model id or local package (default: the embedded one)")
    parser.add_argument("--video", type=Path, default=None, help="use this clip instead of making one")
    parser.add_argument("--json", type=Path, required=False, help="write the report here")
    parser.add_argument("--table", type=Path, help="print the Markdown table of this report and exit")
    parser.add_argument("--arm", choices=("off", "on", "conversion"), help=argparse.SUPPRESS)
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.table is not None:
        print(table(json.loads(args.table.read_text())))
        return 0
    if args.model is None:
        from inference_triton_preproc.validate.default_model import default_model_path

        args.model = str(default_model_path("torch"))
    if args.arm is not None:
        print(json.dumps(run_arm(args)), flush=True)
        return 0
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must be WIDTHxHEIGHT, got {args.size!r}")
    if args.frames <= args.warmup + 1:
        parser.error(f"--frames ({args.frames}) must exceed --warmup ({args.warmup}) + 1")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if args.video is None:
            args.video = make_clip(work / "clip.mp4", (width, height), args.frames)
        runs = []
        for run in range(args.runs):
            for arm in ("off", "on"):
                print(f"run {run + 1}/{args.runs}: arm {arm}", file=sys.stderr, flush=True)
                runs.append(spawn_arm(arm, args, work / f"{arm}.pkl" if run == 0 else None))
        parity = compare_dumps(work / "off.pkl", work / "on.pkl")
        print("conversion arm", file=sys.stderr, flush=True)
        conversion = spawn_arm("conversion", args, None)
    fps = {arm: [r["fps"] for r in runs if r["arm"] == arm and r["fps"] is not None] for arm in ("off", "on")}
    fps_ratio = (_median(fps["on"]) / _median(fps["off"])) if fps["on"] and fps["off"] else None
    ours, stock = _median(conversion["conversion_ms"]), _median(conversion["stock_conversion_ms"])
    conversion_ratio = ours / stock if ours is not None and stock else None
    fill_floor = _median(conversion["fill_floor_ms"])
    fill_floor_ratio = fill_floor / stock if fill_floor is not None and stock else None
    report = {
        "schema": 1,
        "config": {"size": [width, height], "frames": args.frames, "warmup": args.warmup, "runs": args.runs,
                   "model": Path(args.model).name},
        "environment": _environment(),
        "runs": runs,
        "parity": parity,
        "conversion": conversion,
        "summary": {
            "fps_off": _median(fps["off"]), "fps_on": _median(fps["on"]), "fps_ratio": fps_ratio,
            "fps_target": FPS_TARGET, "fps_met": fps_ratio is not None and fps_ratio >= FPS_TARGET,
            "conversion_ms_stock": stock, "conversion_ms_ours": ours, "conversion_ratio": conversion_ratio,
            "conversion_target": CONVERSION_TARGET,
            "fill_floor_ms": fill_floor, "fill_floor_ratio": fill_floor_ratio,
            "conversion_met": conversion_ratio is not None and conversion_ratio <= CONVERSION_TARGET,
            "arms_identical": parity["identical"], "conversion_identical": not conversion["differences"],
            "point_less_frames": next(r["point_less_frames"] for r in runs if r["arm"] == "on"),
        },
    }
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(json.dumps(report["summary"], indent=2))
    return 0 if parity["identical"] and not conversion["differences"] else 1


if __name__ == "__main__":
    sys.exit(main())
