"""The host code of a fused ``post_process`` call around its GPU work, timed on the CPU.

A replayed fused dense call is mostly host time (``benchmarks/README.md``). This script
times the part of it that is the package's own Python: it runs the embedded random-weight
RF-DETR seg nano model (Torch, CPU) on one sample frame, then calls ``post_process`` with
``RFDETR_TRITON_FULLPOSTPROC`` on and the selection (``SelectionGraphs.select``: the CUDA
graph, its copies and its synchronisation) replaced by a function that returns the
frame's detections as five new tensors. It prints, as medians of repeated timings:

* ``fused``: the whole call with that stand-in;
* ``stand-in``: the stand-in alone (five tensor clones);
* ``host model code``: ``post_process`` with the stock function returning a precomputed
  result (inference-models' own code around it);
* ``package overhead``: ``fused`` minus the other two, the package's Python per call.

A measurement script: it swaps an internal for a stand-in, and the CPU is not the GPU
host (compare versions on one machine).

    TRITON_INTERPRET=1 python benchmarks/postprocess_host.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import timeit
from pathlib import Path
from typing import Any

if os.environ.get("TRITON_INTERPRET") != "1":
    raise SystemExit("postprocess_host runs the fused path on the CPU: set TRITON_INTERPRET=1")

import cv2
import torch

import inference_triton_preproc as itp
from inference_triton_preproc.plugin import postprocess as plugin_postprocess
from inference_triton_preproc.runtime.selection import Selected
from inference_triton_preproc.validate.default_model import default_model_path, load_sample_frames


def _median_us(fn: Any, number: int, repeat: int) -> float:
    fn()
    # The least disturbed timing: the machine adds, never removes, time.
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def run(number: int, repeat: int) -> dict[str, Any]:
    from inference_models import AutoModel

    model = AutoModel.from_pretrained(str(default_model_path("torch")), device=torch.device("cpu"))
    frame = cv2.resize(load_sample_frames(limit=1)[0], (192, 108))
    itp.uninstall()
    tensor, meta = model.pre_process([frame], input_color_format="bgr")
    with torch.no_grad():
        outputs = model.forward(tensor)
    itp.install(preprocess=False, postprocess=True, strict=True)
    (detections,) = model.post_process(outputs, meta)
    query = torch.arange(len(detections.confidence))
    calls = 0

    def stand_in(*args: Any, **kwargs: Any) -> Selected:
        nonlocal calls
        calls += 1
        d = detections
        return Selected(d.confidence.clone(), d.class_id.clone(), query.clone(), d.xyxy.clone(), False, d.mask.clone())

    selection = plugin_postprocess._selection
    selection.select = stand_in  # type: ignore[method-assign]
    try:
        fused = _median_us(lambda: model.post_process(outputs, meta), number, repeat)
        # Otherwise ``fused`` timed some other path, and the overhead below means nothing.
        if calls != number * repeat + 1:
            raise SystemExit(f"the fused call reached the selection {calls} times, not {number * repeat + 1}")
        alone = _median_us(stand_in, number, repeat)
    finally:
        del selection.select
    itp.uninstall()
    module = sys.modules[type(model).__module__]
    stock = module.post_process_instance_segmentation_results
    module.post_process_instance_segmentation_results = lambda **kwargs: [detections]
    try:
        host = _median_us(lambda: model.post_process(outputs, meta), number, repeat)
    finally:
        module.post_process_instance_segmentation_results = stock
    return {
        "benchmark": "postprocess_host",
        "version": itp.__version__,
        "detections": len(detections.confidence),
        "fused_calls": number * repeat + 1,
        "fused_us": fused,
        "stand_in_us": alone,
        "host_model_code_us": host,
        "package_overhead_us": fused - alone - host,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=5000, help="calls per timing (default 5000)")
    parser.add_argument("--repeat", type=int, default=5, help="timings, of which the least is kept (default 5)")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    report = run(args.number, args.repeat)
    for name in ("fused_us", "stand_in_us", "host_model_code_us", "package_overhead_us"):
        print(f"{name:22s} {report[name]:8.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
