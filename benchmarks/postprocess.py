"""Model-level post-processing: stock vs fused ``post_process``, side by side in one run.

The embedded random-weight RF-DETR seg nano model runs its network on frames of the
sample clip scaled to ``--size``; each frame's network outputs are then post-processed by
the stock functions and by the fused path (``RFDETR_TRITON_FULLPOSTPROC``), dense masks
and RLE masks, in two orders: alternating stock and fused per frame (rows ``dense``,
``rle``), and where a pipeline calls it, right after the frame's ``forward`` (rows
``dense after forward``, ``rle after forward``: a pass of stock calls, then a pass of
fused calls, each call preceded by its frame's forward). Each call is timed until its
results are complete on the device (a device synchronisation ends it). Every fused
result is checked equal to the stock one; the JSON records the medians, the speed-up,
detections per frame and the equality verdict.

    python benchmarks/postprocess.py --size 1080x1920 --frames 20 --iters 5 --json benchmarks/h200_postprocess_1080p.json

On a machine without CUDA it runs under the Triton interpreter (tiny sizes), which is how
CI exercises it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import torch

import inference_triton_preproc as itp
from inference_triton_preproc.bench import _device_info, _versions
from inference_triton_preproc.plugin import call_counts
from inference_triton_preproc.validate.default_model import default_model_path, load_sample_frames
from inference_triton_preproc.validate.exact import results_difference


def _timed(fn: Any, device: torch.device) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, (time.perf_counter() - start) * 1e3


def run(size: tuple[int, int], frames: int, iters: int, confidence: float | str) -> dict[str, Any]:
    from inference_models import AutoModel

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModel.from_pretrained(str(default_model_path("torch")), device=device)
    clip = load_sample_frames(limit=frames)
    inputs = []
    itp.uninstall()
    for frame in clip:
        scaled = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        tensor, meta = model.pre_process([scaled], input_color_format="bgr")
        with torch.no_grad():
            inputs.append((tensor, model.forward(tensor), meta))
    rows: dict[str, Any] = {}
    counts_before = call_counts()

    def post_process(results: Any, meta: Any, mask_format: str) -> Any:
        return model.post_process(results, meta, mask_format=mask_format, confidence=confidence)

    for mask_format in ("dense", "rle"):
        for after_forward in (False, True):
            times: dict[str, list[float]] = {"stock": [], "fused": []}
            detections, differences = [], []

            def record(stock_ms: float, fused_ms: float, want: Any, got: Any) -> None:
                times["stock"].append(stock_ms)
                times["fused"].append(fused_ms)
                detections.append(len(want[0]))
                differences.append(results_difference(got, want))

            # The first pass warms up (compiles, calibrates, captures): its results are checked, not timed.
            for iteration in range(iters + 1):
                if after_forward:
                    stock_calls = []
                    itp.uninstall()
                    for tensor, _, meta in inputs:
                        with torch.no_grad():
                            results = model.forward(tensor)
                        stock_calls.append(_timed(lambda: post_process(results, meta, mask_format), device))
                    itp.install(preprocess=False, postprocess=True, strict=True)
                    for (tensor, _, meta), (want, stock_ms) in zip(inputs, stock_calls):
                        with torch.no_grad():
                            results = model.forward(tensor)
                        got, fused_ms = _timed(lambda: post_process(results, meta, mask_format), device)
                        record(stock_ms, fused_ms, want, got)
                else:
                    for _, results, meta in inputs:
                        itp.uninstall()
                        want, stock_ms = _timed(lambda: post_process(results, meta, mask_format), device)
                        itp.install(preprocess=False, postprocess=True, strict=True)
                        got, fused_ms = _timed(lambda: post_process(results, meta, mask_format), device)
                        record(stock_ms, fused_ms, want, got)
                if not iteration:
                    for values in (*times.values(), detections):
                        values.clear()
            differences = [d for d in differences if d]
            stock, fused = statistics.median(times["stock"]), statistics.median(times["fused"])
            rows[f"{mask_format} after forward" if after_forward else mask_format] = {
                "stock_ms": stock,
                "fused_ms": fused,
                "speedup": stock / fused,
                "stock_ms_all": times["stock"],
                "fused_ms_all": times["fused"],
                "detections_per_frame": [min(detections), statistics.median(detections), max(detections)],
                "identical": not differences,
                "differences": differences[:5],
            }
    itp.uninstall()
    return {
        "benchmark": "postprocess",
        "device": _device_info(device),
        "versions": _versions(),
        "size": list(size),
        "frames": frames,
        "iters": iters,
        "confidence": confidence,
        # This run's calls only (the counters are the process's).
        "call_counts": {k: v - counts_before.get(k, 0) for k, v in call_counts().items() if v != counts_before.get(k, 0)},
        "rows": rows,
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"post_process, {report['size'][0]}x{report['size'][1]} frames, {report['device'].get('name', report['device'])}",
        "| masks | stock ms | fused ms | speed-up | detections/frame (min, median, max) | identical |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["rows"].items():
        low, mid, high = row["detections_per_frame"]
        lines.append(
            f"| {name} | {row['stock_ms']:.3f} | {row['fused_ms']:.3f} | {row['speedup']:.1f}x | {low}, {mid:g}, {high} | {row['identical']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1080x1920", help="frame HxW the clip is scaled to (default 1080x1920)")
    parser.add_argument("--frames", type=int, default=20, help="clip frames (default 20)")
    parser.add_argument("--iters", type=int, default=5, help="timed passes over the frames (default 5)")
    parser.add_argument("--confidence", default="default", help="post_process confidence (default: the model's default)")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    confidence = args.confidence if args.confidence in ("default", "best") else float(args.confidence)
    report = run((height, width), args.frames, args.iters, confidence)
    print(format_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if all(row["identical"] for row in report["rows"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
