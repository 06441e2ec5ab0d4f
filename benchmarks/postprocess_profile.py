"""Where a fused dense ``post_process`` call spends its time, right after its frame's ``forward``.

The embedded random-weight RF-DETR seg nano model (Torch) on 12 frames of the bundled clip
scaled to 1080p, ``RFDETR_TRITON_FULLPOSTPROC`` on (strict). Prints, in one process:

* the median fused call after ``forward`` (each call timed between two device
  synchronisations);
* an A/B of the selection graph's two forms over alternating passes: the ranked graph
  first (as shipped) against the top-k graph alone;
* the GPU time of one replay of each graph (CUDA events);
* the median fused call on one frame back to back, then a ``cProfile`` of 500 such calls;
* a torch profile of the calls after ``forward``: the host operations per call, and the
  device kernels of the whole trace (the model's own among them).

CUDA only. It reads and swaps internals for the A/B: a measurement script, not an example.

    python benchmarks/postprocess_profile.py
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import time
from typing import Any

import cv2
import torch

import inference_triton_preproc as itp
from inference_triton_preproc.plugin import postprocess as plugin_postprocess
from inference_triton_preproc.validate.default_model import default_model_path, load_sample_frames


def _after_forward(model: Any, tensor: torch.Tensor, meta: Any) -> tuple[float, Any]:
    """(µs, result) of one ``post_process`` right after the frame's ``forward``."""
    with torch.no_grad():
        outputs = model.forward(tensor)
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = model.post_process(outputs, meta)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e6, result


def _graph_ab(model: Any, inputs: list[tuple[torch.Tensor, Any]]) -> None:
    captured = [plugin_postprocess._selection._graphs.get(key) for key in plugin_postprocess._selection._graphs.keys()]
    ranked = [c.graph for c in captured]
    times: dict[str, list[float]] = {"ranked": [], "topk": []}
    for _ in range(4):
        for arm in times:
            for c, graph in zip(captured, ranked):
                c.graph = graph if arm == "ranked" else c.topk_graph
            times[arm] += [_after_forward(model, t, m)[0] for t, m in inputs]
    for c, graph in zip(captured, ranked):
        c.graph = graph
    print("A/B after forward median us", {k: statistics.median(v) for k, v in times.items()}, "graphs", len(captured))
    for c in captured:
        for name, graph in (("ranked", c.graph), ("topk", c.topk_graph)):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            replays = []
            for _ in range(50):
                start.record()
                graph.replay()
                end.record()
                torch.cuda.synchronize()
                replays.append(start.elapsed_time(end) * 1e3)
            print("graph replay GPU us", name, statistics.median(replays))


def _same_frame(model: Any, tensor: torch.Tensor, meta: Any) -> None:
    with torch.no_grad():
        outputs = model.forward(tensor)
    torch.cuda.synchronize()
    times = []
    for _ in range(200):
        start = time.perf_counter()
        model.post_process(outputs, meta)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e6)
    print("same-frame loop median us", statistics.median(times[20:]))
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(500):
        model.post_process(outputs, meta)
        torch.cuda.synchronize()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(35)
    print(text.getvalue()[:9000])


def _torch_profile(model: Any, inputs: list[tuple[torch.Tensor, Any]]) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
        for tensor, meta in inputs:
            with torch.no_grad():
                outputs = model.forward(tensor)
            torch.cuda.synchronize()
            with torch.profiler.record_function("PP"):
                model.post_process(outputs, meta)
            torch.cuda.synchronize()
    events = trace.events()
    # The range is listed once on the host (and once more as a device annotation).
    calls = [e for e in events if e.name == "PP" and e.device_type.name == "CPU"]
    print("PP cpu us", [round(e.cpu_time_total) for e in calls])
    rows: dict[str, list[float]] = {}
    for event in events:
        if event.name == "PP" or event.device_type.name != "CPU":
            continue
        if any(w.time_range.start <= event.time_range.start and event.time_range.end <= w.time_range.end for w in calls):
            row = rows.setdefault(event.name, [0, 0.0])
            row[0] += 1
            row[1] += event.cpu_time_total
    for name, (n, cpu) in sorted(rows.items(), key=lambda kv: -kv[1][1])[:40]:
        print(f"{n / len(calls):5.1f} calls/frame  cpu {cpu / len(calls):8.1f} us  {name[:90]}")
    kernels: dict[str, list[float]] = {}
    for event in events:
        if event.device_type.name == "CUDA":
            row = kernels.setdefault(event.name[:80], [0, 0.0])
            row[0] += 1
            row[1] += event.device_time_total
    print("device events in trace:", sum(int(n) for n, _ in kernels.values()))
    for name, (n, total) in sorted(kernels.items(), key=lambda kv: -kv[1][1])[:25]:
        print(f"{int(n):4d} x {total / n:8.1f} us  {name}")


def main() -> None:
    from inference_models import AutoModel

    if not torch.cuda.is_available():
        raise SystemExit("postprocess_profile needs CUDA")
    model = AutoModel.from_pretrained(str(default_model_path("torch")), device=torch.device("cuda"))
    inputs = [model.pre_process([cv2.resize(f, (1920, 1080))], input_color_format="bgr") for f in load_sample_frames(limit=12)]
    itp.install(preprocess=False, postprocess=True, strict=True)
    for _ in range(3):  # warm-up: compiles, calibrates, captures
        for tensor, meta in inputs:
            _after_forward(model, tensor, meta)
    times = [_after_forward(model, t, m)[0] for _ in range(5) for t, m in inputs]
    detections = [len(_after_forward(model, t, m)[1][0]) for t, m in inputs]
    print("after-forward fused median us", statistics.median(times), "dets", detections)
    _graph_ab(model, inputs)
    _same_frame(model, *inputs[0])
    _torch_profile(model, inputs)
    itp.uninstall()


if __name__ == "__main__":
    main()
