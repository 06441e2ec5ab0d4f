"""Where inference's instance-segmentation adapter spends a frame: stock vs the ``inference_adapter`` surface.

One process, one adapter (the embedded random-weight RF-DETR seg package, or ``--model``),
arms run one after the other on the same frames:

* ``stock``: the plugin uninstalled;
* ``ours``: the post-processing switch with only the adapter surface (the model's own
  ``post_process`` gives it dense masks);
* ``ours-fused``: the full post-processing switch (adapter surface plus the model-level
  fused ``post_process``), when that surface exists in this checkout.

Per frame it times ``adapter.infer(frame)`` and, inside it, the model's ``pre_process``,
``forward`` and ``post_process`` (the device is synchronised at the end of each, so the
stage owns its GPU work). Response building is what ``adapter.infer`` adds beyond those
three: image loading, kwargs mapping, mask transfers, contours, pydantic objects. It is
also given less the garbage collections that ran inside it (``response_building_less_gc``):
a full collection walks the whole process, lands on whichever call happens to trigger
it, and is measured per frame in a real pipeline by ``bench pipeline``. The
arms' responses are compared exactly (detection ids from a counter). Target: response
building of ``ours`` <= 15 % of ``stock``'s. The floor beside it: the time it takes to
make the stock responses' objects (one ``Point`` per polygon vertex) from ready values,
the ``Point`` objects made the way the plugin makes them (:mod:`plugin.points`, the
fastest way known here): any builder of equal responses makes these objects. A second
floor adds the tracing of the frame's masks (one ``cv2.findContours`` per mask crop, the
masks already on the host), which any builder that traces on the host with OpenCV does.

    python benchmarks/adapter_response.py --device cuda --size 1080p --frames 30 --out adapter_response.json
    python benchmarks/adapter_response.py --device cpu --size native --frames 1 --warmup 0   # tiny, CI
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from inference_triton_preproc.validate.speed import GcClock

for _name in ("ALLOW_INFERENCE_MODELS_DIRECTLY_ACCESS_LOCAL_PACKAGES", "ALLOW_INFERENCE_MODELS_UNTRUSTED_PACKAGES", "DISABLE_VERSION_CHECK"):
    os.environ.setdefault(_name, "True")

ADAPTER_MODULE = "inference.core.models.inference_models_adapters"
STAGES = ("pre_process", "forward", "post_process")
SIZES = {"native": None, "720p": (720, 1280), "1080p": (1080, 1920), "4k": (2160, 3840)}
TARGET_RATIO = 0.15


def _sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class StageTimer:
    """Times the model's stages through instance attributes that call whatever the class holds now.

    ``times[stage]`` is wall time; ``gc[stage]`` the garbage collection inside it.
    """

    def __init__(self, model: Any, device: Any, clock: GcClock) -> None:
        self.model, self.device, self.clock = model, device, clock
        self.times: dict[str, float] = {}
        self.gc: dict[str, float] = {}
        for stage in STAGES:
            setattr(model, stage, self._timed(stage))

    def _timed(self, stage: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            method = getattr(type(self.model), stage).__get__(self.model)
            start, collected = time.perf_counter(), self.clock.seconds
            result = method(*args, **kwargs)
            _sync(self.device)
            self.times[stage] = self.times.get(stage, 0.0) + time.perf_counter() - start
            self.gc[stage] = self.gc.get(stage, 0.0) + self.clock.seconds - collected
            return result

        return call

    def remove(self) -> None:
        for stage in STAGES:
            self.model.__dict__.pop(stage, None)


@contextlib.contextmanager
def _deterministic_ids() -> Iterator[None]:
    import roboflow_workflows.core_steps.common.segmentation_entities as entities

    counter = itertools.count()
    original = entities.uuid4
    entities.uuid4 = lambda: uuid.UUID(int=next(counter))
    try:
        yield
    finally:
        entities.uuid4 = original


@contextlib.contextmanager
def _arm(name: str) -> Iterator[None]:
    import inference_triton_preproc as itp
    from inference_triton_preproc.plugin import _hook

    itp.uninstall()
    targets = _hook.TARGETS
    try:
        if name == "ours":
            _hook.TARGETS = {ADAPTER_MODULE: "inference_adapter"}  # the adapter surface alone
        if name != "stock":
            assert itp.install(preprocess=False, postprocess=True)
        yield
    finally:
        _hook.TARGETS = targets
        itp.uninstall()


def _frames(count: int, size: str, stride: int) -> list[Any]:
    import cv2

    from inference_triton_preproc.validate.default_model import load_sample_frames

    clip = load_sample_frames(limit=count, stride=stride)
    shape = SIZES[size]
    if shape is None:
        return clip
    return [cv2.resize(f, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) for f in clip]


def _summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"median_ms": statistics.median(ms), "mean_ms": statistics.fmean(ms), "min_ms": min(ms)}


def _construction_floor(responses: list[list[Any]], clock: GcClock) -> tuple[list[float], list[float]]:
    """Per frame, the time it takes to make that frame's response objects from plain values, and
    the garbage collection inside that time.

    Every exact response builder makes these objects: one ``Point`` per polygon vertex
    (or the RLE dicts), however the values were found. Points are made by
    ``plugin.points`` (validated from dicts when it refuses the point model). The values
    are taken from the stock responses beforehand; detection ids are left to the
    model's default factory, as in the stock builder.
    """
    from inference_triton_preproc.plugin.points import point_builder

    times, gc_times = [], []
    for frame in responses:
        for response in frame:
            cls = type(response)
            made = []  # (prediction class, its values but the points, the points' vertices or None, the point builder)
            for p in response.predictions:
                has_points = "points" in type(p).model_fields
                values = p.model_dump(by_alias=True, exclude={"detection_id", "points"} if has_points else {"detection_id"})
                vertices = [[q.x, q.y] for q in p.points] if has_points else None
                made.append((type(p), values, vertices, point_builder(type(p)) if has_points else None))
            image = response.image
            start, collected = time.perf_counter(), clock.seconds
            predictions = []
            for c, values, vertices, build in made:
                if vertices is None:
                    predictions.append(c(**values))
                elif build is None:
                    predictions.append(c(**values, points=[{"x": x, "y": y} for x, y in vertices]))
                else:
                    predictions.append(c(**values, points=build(vertices)))
            cls(predictions=predictions, image=type(image)(width=image.width, height=image.height))
            times.append(time.perf_counter() - start)
            gc_times.append(clock.seconds - collected)
    return times, gc_times


def _tracing_floor(model: Any, frames: list[Any], confidence: float, device: Any, clock: GcClock) -> tuple[list[float], list[float]]:
    """Per frame, the time it takes to trace the polygon of each of the frame's dense masks,
    and the garbage collection inside that time.

    Tracing as the plugin traces (:func:`runtime.contours.largest_contours`: one
    ``cv2.findContours`` per mask on its foreground crop, on the shared pool), the masks
    and their foreground boxes already on the host: what a builder of equal polygon
    responses that traces with OpenCV on the host, as the stock path does, spends at least.
    """
    import torch

    from inference_triton_preproc.runtime.contours import foreground_boxes, largest_contours

    times, gc_times = [], []
    for frame in frames:
        tensor, meta = model.pre_process(frame)
        with torch.no_grad():
            detections = model.post_process(model.forward(tensor), meta, mask_format="dense", confidence=confidence)
        for masks in (d.mask.cpu() for d in detections):
            boxes = foreground_boxes(masks).numpy()
            start, collected = time.perf_counter(), clock.seconds
            largest_contours(masks, boxes)
            times.append(time.perf_counter() - start)
            gc_times.append(clock.seconds - collected)
    _sync(device)
    return times, gc_times


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import inference.core.models.inference_models_adapters as module

    from inference_triton_preproc.plugin import call_counts
    from inference_triton_preproc.validate.default_model import default_model_path

    module.ALLOW_INFERENCE_MODELS_DIRECTLY_ACCESS_LOCAL_PACKAGES = True
    module.ALLOW_INFERENCE_MODELS_UNTRUSTED_PACKAGES = True
    device = torch.device(args.device)
    adapter = module.InferenceModelsInstanceSegmentationAdapter(model_id=args.model or str(default_model_path("torch")), device=device)
    frames = _frames(args.frames, args.size, args.stride)
    request = {"confidence": args.confidence}
    if args.mask_format == "rle":
        request["response_mask_format"] = "rle"
    arms = [a for a in args.arms.split(",") if a]
    clock = GcClock()
    timer = StageTimer(adapter._model, device, clock)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "frame_size": list(frames[0].shape[:2]),
        "frames": len(frames),
        "request": request,
        "arms": {},
    }
    dumps: dict[str, list] = {}
    for arm in arms:
        with _arm(arm):
            for frame in frames[: args.warmup]:
                adapter.infer(frame, **request)
            before = call_counts()
            rows: dict[str, list[float]] = {k: [] for k in (*STAGES, "infer", "response_building", "response_building_gc", "response_building_less_gc")}
            responses = []
            with _deterministic_ids():
                for frame in frames:
                    timer.times, timer.gc = {}, {}
                    _sync(device)
                    start, collected = time.perf_counter(), clock.seconds
                    responses.append(adapter.infer(frame, **request))
                    _sync(device)
                    total, total_gc = time.perf_counter() - start, clock.seconds - collected
                    rows["infer"].append(total)
                    for stage in STAGES:
                        rows[stage].append(timer.times.get(stage, 0.0))
                    building = total - sum(timer.times.get(s, 0.0) for s in STAGES)
                    building_gc = total_gc - sum(timer.gc.values())
                    rows["response_building"].append(building)
                    rows["response_building_gc"].append(building_gc)
                    rows["response_building_less_gc"].append(building - building_gc)
            after = call_counts()
        dumps[arm] = [[r.model_dump() for r in rs] for rs in responses]
        if arm == "stock":
            floor, floor_gc = _construction_floor(responses, clock)
            result["construction_floor"] = _summary(floor)
            result["construction_floor_less_gc"] = _summary([t - g for t, g in zip(floor, floor_gc)])
        result["arms"][arm] = {
            **{stage: _summary(values) for stage, values in rows.items()},
            "predictions_per_frame": statistics.fmean(len(r.predictions) for rs in responses for r in rs),
            "call_counts": {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)},
        }
    timer.remove()
    if "stock" in result["arms"]:
        import inference_triton_preproc as itp

        itp.uninstall()
        tracing, tracing_gc = _tracing_floor(adapter._model, frames, args.confidence, device, clock)
        result["tracing_floor"] = _summary(tracing)
        both = [a + b for a, b in zip(floor, tracing)]
        both_less_gc = [a + b - c - d for a, b, c, d in zip(floor, tracing, floor_gc, tracing_gc)]
        result["construction_and_tracing_floor"] = _summary(both)
        result["construction_and_tracing_floor_less_gc"] = _summary(both_less_gc)
        stock = result["arms"]["stock"]["response_building"]["median_ms"]
        stock_less_gc = result["arms"]["stock"]["response_building_less_gc"]["median_ms"]
        for arm in arms:
            if arm == "stock":
                continue
            row = result["arms"][arm]
            ratio = row["response_building"]["median_ms"] / stock if stock else float("nan")
            row["response_building_vs_stock"] = ratio
            row["response_building_less_gc_vs_stock"] = row["response_building_less_gc"]["median_ms"] / stock_less_gc if stock_less_gc else float("nan")
            row["meets_target"] = ratio <= TARGET_RATIO
            row["responses_equal_stock"] = dumps[arm] == dumps["stock"]
        result["construction_floor_vs_stock"] = result["construction_floor"]["median_ms"] / stock if stock else float("nan")
        result["construction_floor_less_gc_vs_stock"] = (
            result["construction_floor_less_gc"]["median_ms"] / stock_less_gc if stock_less_gc else float("nan")
        )
        both = result["construction_and_tracing_floor"]
        result["construction_and_tracing_floor_vs_stock"] = both["median_ms"] / stock if stock else float("nan")
        result["construction_and_tracing_floor_less_gc_vs_stock"] = (
            result["construction_and_tracing_floor_less_gc"]["median_ms"] / stock_less_gc if stock_less_gc else float("nan")
        )
    clock.close()
    result["target_ratio"] = TARGET_RATIO
    return result


def _table(result: dict[str, Any]) -> str:
    columns = (*STAGES, "response_building", "response_building_less_gc", "infer")
    lines = ["arm          " + "".join(f"{c:>27}" for c in columns) + "   ratio  equal"]
    for arm, row in result["arms"].items():
        cells = "".join(f"{row[c]['median_ms']:>24.2f} ms" for c in columns)
        ratio = row.get("response_building_vs_stock")
        lines.append(f"{arm:<13}{cells}   {'' if ratio is None else f'{ratio:5.3f}'}  {row.get('responses_equal_stock', '')}")
    floor = result.get("construction_floor")
    if floor is not None:
        lines.append(
            f"floor: making the stock responses' objects alone {floor['median_ms']:.2f} ms "
            f"({result['construction_floor_vs_stock']:.3f} of stock's response building); less garbage collection "
            f"{result['construction_floor_less_gc']['median_ms']:.2f} ms ({result['construction_floor_less_gc_vs_stock']:.3f})"
        )
        both = result["construction_and_tracing_floor"]
        lines.append(
            f"floor with the tracing (one findContours per mask crop, the masks on the host): {both['median_ms']:.2f} ms "
            f"({result['construction_and_tracing_floor_vs_stock']:.3f}); tracing alone {result['tracing_floor']['median_ms']:.2f} ms"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="torch device of the model (default cuda)")
    parser.add_argument("--model", default=None, help="model package dir or id (default: the embedded package)")
    parser.add_argument("--size", choices=list(SIZES), default="1080p", help="frames: sample clip scaled to this size")
    parser.add_argument("--frames", type=int, default=20, help="timed frames per arm")
    parser.add_argument("--stride", type=int, default=3, help="take every N-th clip frame")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames per arm first")
    parser.add_argument("--confidence", type=float, default=0.05, help="request confidence (low: more masks)")
    parser.add_argument("--mask-format", choices=("polygon", "rle"), default="polygon", help="response_mask_format")
    parser.add_argument("--arms", default="stock,ours,ours-fused", help="comma-separated arms")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.warmup < 0:
        parser.error("--frames must be >= 1 and --warmup >= 0")
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(_table(result), file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
