"""Latency and host CPU cost of turning a uint8 frame into the model's input, per path.

    python -m inference_triton_preproc.bench [--source 1080x1920|PATH] [--sizes 312,432,624]
        [--modes pil,cv2,torch] [--batch 1,4] [--iters N] [--json FILE]
    python -m inference_triton_preproc.bench pipeline ...   (the real InferencePipeline per
        switch configuration: see :mod:`inference_triton_preproc.bench_pipeline`)

For every target size, kernel mode and batch size it times, per frame:

* ``stock``: inference-models' own ``pre_process_network_input`` (Pillow on the host,
  then ``.to(device)``) for ``pil`` mode when inference-models is installed; otherwise,
  and for the other modes, ``reference``: this package's ``preprocess_reference`` (the
  real library on the host) and ``.to(device)``.
* ``upstream``: inference-models' opt-in Triton runtime (``FastPreprocessRuntime``;
  batch 1, ``pil`` only, CUDA only).
* ``ours``: :func:`~inference_triton_preproc.preprocess` with each ingest strategy
  (``auto``, ``pageable``, ``staging``, ``chunked`` on pageable frames rotated among
  ``--distinct`` different frames so caches do not flatter; ``pinned`` on frames of a
  :class:`~inference_triton_preproc.runtime.PinnedFramePool` of two per batch frame).
* floors: the HtoD copy alone from page-locked and from pageable memory (and through
  the staging strategies), the fused kernel alone on a frame already on the device
  (one launch from Python; one CUDA-graph replay; GPU time per launch with
  ``KERNEL_REPS`` launches back to back in one graph), and the latency of replaying a
  graph that does next to nothing.

Latency is wall time from the call until the output is ready on the device
(synchronised, warm-up excluded; kernel floors use CUDA events), reported as median and
p99 per frame. Host CPU is the mean, over a second pass, of the calling thread's CPU
time until the call returns plus the CPU time of every other thread of the process
until the output is ready (the wait sleeps on a blocking CUDA event): what a frame
costs the process, helper threads included, without the wait. Every row's output is compared with the
reference of its mode on every distinct input (``max |diff|``), so a fast-but-wrong
path shows. On the CPU (kernels under ``TRITON_INTERPRET=1``) the CUDA-only rows are
skipped with a note; tiny sizes keep such runs short (``--source 48x64 --sizes 16``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._assets import sample_video_path
from ._host import stretch_network_input
from ._paths import check_output_file
from ._version import __version__
from .api import preprocess, resolve_device
from .kernels.resize import MODES, Mode, interpreted, resize_normalize, resize_tables
from .probe import ProbeInputError, read_frames
from .reference import IMAGENET_MEAN, IMAGENET_STD, preprocess_reference
from .runtime.graphs import capture_graph
from .runtime.ingest import (
    CHUNK_THREADS,
    CHUNKED_MIN_BYTES,
    CHUNKS_PER_FRAME,
    INGEST_ENV,
    STRATEGIES,
    FrameIngest,
    default_ingest,
)
from .runtime.pinned import PinnedFramePool

logger = logging.getLogger(__name__)

UPSTREAM_FLAG = "INFERENCE_MODELS_RFDETR_TRITON_PREPROC_ENABLED"
DEFAULT_SOURCE = "1080x1920"
CUDA_ONLY_NOTE = "CUDA only"

Inputs = list[np.ndarray]
Prepare = Callable[[int], Any]
Run = Callable[[Any], torch.Tensor]


class BenchInputError(Exception):
    """The bench's source could not be read."""


@dataclass
class Row:
    """One timed path. Times are milliseconds per frame; None when not measured."""

    kind: str  # "stock", "reference", "upstream", "ours" or "floor"
    path: str
    batch: int
    mode: str | None = None
    size: int | None = None
    strategy: str | None = None
    clock: str = "wall"  # "wall" (synchronised) or "cuda-events" (GPU time only)
    median_ms: float | None = None
    p99_ms: float | None = None
    cpu_ms: float | None = None
    max_abs_diff: float | None = None
    status: str = "ok"  # "ok" or "skipped"
    note: str = ""


@dataclass
class Config:
    source: str = DEFAULT_SOURCE
    sizes: list[int] = field(default_factory=lambda: [312, 432, 624])
    modes: list[Mode] = field(default_factory=lambda: list(MODES))
    batches: list[int] = field(default_factory=lambda: [1, 4])
    iters: int = 200
    warmup: int = 20
    baseline_iters: int = 30
    distinct: int = 8
    device: str | None = None


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def load_frames(source: str, count: int) -> tuple[Inputs, str]:
    """``count`` distinct BGR uint8 frames and a description of where they came from.

    ``HxW``: evenly spaced frames of the shipped sample clip resized to that size (real
    footage at any resolution). A path: the first ``count`` frames of a video, or an
    image shifted by a different offset per frame.
    """
    import cv2

    match = re.fullmatch(r"(\d+)x(\d+)", source)
    if match:
        height, width = int(match[1]), int(match[2])
        if height <= 0 or width <= 0:
            raise BenchInputError(f"--source {source}: height and width must be positive")
        clip, _ = read_frames(video=str(sample_video_path()), frames=10**6)
        picks = np.linspace(0, len(clip) - 1, count).round().astype(int)
        frames = [cv2.resize(clip[i], (width, height), interpolation=cv2.INTER_LINEAR) for i in picks]
        return frames, f"sample clip resized to {height}x{width}"
    if not Path(source).exists():
        raise BenchInputError(f"--source {source!r} is neither HxW nor an existing file")
    image = cv2.imread(source, cv2.IMREAD_COLOR)
    if image is not None:
        frames = [np.ascontiguousarray(np.roll(image, (7 * k, 13 * k), axis=(0, 1))) for k in range(count)]
        return frames, f"{source}, {image.shape[0]}x{image.shape[1]} (shifted copies)"
    try:
        clip, _ = read_frames(video=source, frames=count)
    except ProbeInputError as error:
        raise BenchInputError(str(error)) from None
    return [clip[k % len(clip)] for k in range(count)], f"{source}, {clip[0].shape[0]}x{clip[0].shape[1]}"


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _summary(per_call_ms: Sequence[float], batch: int) -> tuple[float, float]:
    values = np.asarray(per_call_ms, dtype=np.float64) / batch
    return float(np.median(values)), float(np.percentile(values, 99))


def time_wall(
    prepare: Prepare, run: Run, *, n_inputs: int, iters: int, warmup: int, device: torch.device
) -> tuple[list[float], list[float]]:
    """Per call: wall ms until the output is ready, and host CPU ms the call costs.

    Two passes. Latency: synchronise, call, synchronise (the GPU wait spins, as a
    latency-bound caller's would). CPU: the calling thread's CPU time until the call
    returns, plus the CPU time every other thread of the process spends from the call
    until its output is ready (PyTorch's copy threads and their spin-wait, ingest
    workers); the wait for the GPU sleeps on a blocking CUDA event and is not counted.
    """
    time.sleep(0.05)  # let helper threads of the previous row go idle first
    for i in range(warmup):
        run(prepare(i % n_inputs))
    wall, cpu = [], []
    for i in range(iters):
        args = prepare(i % n_inputs)
        _sync(device)
        t0 = time.perf_counter()
        run(args)
        _sync(device)
        wall.append((time.perf_counter() - t0) * 1e3)
        # Pool frames go back to their pool here, before the next prepare acquires.
        del args
    ready = torch.cuda.Event(blocking=True) if device.type == "cuda" else None
    for i in range(iters):
        args = prepare(i % n_inputs)
        _sync(device)
        p0, t0 = time.process_time(), time.thread_time()
        run(args)
        t1 = time.thread_time()
        if ready is not None:
            ready.record(torch.cuda.current_stream(device))
            ready.synchronize()
        p2, t2 = time.process_time(), time.thread_time()
        cpu.append(((t1 - t0) + (p2 - p0) - (t2 - t0)) * 1e3)
        del args
    return wall, cpu


def time_events(fn: Callable[[], Any], *, iters: int, warmup: int, device: torch.device) -> list[float]:
    """Per call: GPU ms between CUDA events around ``fn`` on the current stream."""
    stream = torch.cuda.current_stream(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize(device)
    times = []
    for _ in range(iters):
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def max_abs_diff(prepare: Prepare, run: Run, refs: Sequence[torch.Tensor], device: torch.device) -> float:
    """Largest |output - reference| over every distinct input."""
    worst = 0.0
    for j, ref in enumerate(refs):
        out = run(prepare(j))
        _sync(device)
        worst = max(worst, (out.detach().float().cpu() - ref).abs().max().item())
    return worst


@contextlib.contextmanager
def _ingest_env(strategy: str) -> Iterator[None]:
    old = os.environ.get(INGEST_ENV)
    os.environ[INGEST_ENV] = strategy
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(INGEST_ENV, None)
        else:
            os.environ[INGEST_ENV] = old


# --------------------------------------------------------------------------------------
# Host libraries (inference-models is optional)
# --------------------------------------------------------------------------------------


@dataclass
class Host:
    """inference-models' stock preprocessing and Triton runtime, when importable."""

    stock: Callable[..., Any] | None = None
    config: tuple[Any, Any] | None = None  # (ImagePreProcessing, NetworkInputDefinition) classes
    runtime_cls: type | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def network_input(self, size: int) -> Any:
        assert self.config is not None
        return self.config[1].model_validate(stretch_network_input(size, size, IMAGENET_MEAN, IMAGENET_STD))


def load_host(cuda: bool) -> Host:
    """Import inference-models' stock path (and, on CUDA, its Triton runtime).

    Its Triton runtime reads ``INFERENCE_MODELS_RFDETR_TRITON_PREPROC_ENABLED`` once, when
    inference-models is imported: the flag is switched on for that import only.
    """
    host = Host()
    if not cuda:
        host.notes["upstream"] = CUDA_ONLY_NOTE
    flag_before = os.environ.get(UPSTREAM_FLAG)
    if cuda and "inference_models" not in sys.modules:
        os.environ.setdefault(UPSTREAM_FLAG, "True")
    try:
        from inference_models.models.common.roboflow.model_packages import (
            ImagePreProcessing,
            NetworkInputDefinition,
        )
        from inference_models.models.rfdetr.pre_processing import (
            pre_process_network_input,
        )
    except Exception as error:  # noqa: BLE001 - any import failure means "not installed here"
        host.notes["stock"] = f"inference-models not importable ({type(error).__name__}: {error})"
        return host
    finally:
        if flag_before is None:
            os.environ.pop(UPSTREAM_FLAG, None)
    host.stock = pre_process_network_input
    host.config = (ImagePreProcessing, NetworkInputDefinition)
    if not cuda:
        return host
    try:
        from inference_models.models.rfdetr.triton_preprocess_runtime import (
            FastPreprocessRuntime,
        )
    except Exception as error:  # noqa: BLE001
        host.notes["upstream"] = f"FastPreprocessRuntime not importable ({type(error).__name__}: {error})"
        return host
    host.runtime_cls = FastPreprocessRuntime
    return host


# --------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------


@dataclass
class Case:
    """What every row of one (size, mode, batch) shares."""

    size: int
    mode: Mode
    batch: int
    inputs: list[Inputs]  # distinct batches of pageable frames
    refs: list[torch.Tensor]  # reference output of each, [batch, 3, size, size] on the CPU
    device: torch.device
    cfg: Config


def _no_input(_: int) -> None:
    return None


def _timed_row(row: Row, case: Case, prepare: Prepare, run: Run, iters: int, warmup: int) -> Row:
    wall, cpu = time_wall(prepare, run, n_inputs=len(case.inputs), iters=iters, warmup=warmup, device=case.device)
    row.median_ms, row.p99_ms = _summary(wall, case.batch)
    row.cpu_ms = float(np.mean(cpu)) / case.batch
    row.max_abs_diff = max_abs_diff(prepare, run, case.refs, case.device)
    return row


def baseline_row(case: Case, host: Host) -> Row:
    """The stock inference-models path (pil) or the reference library + upload."""
    size, device = case.size, case.device
    if case.mode == "pil" and host.stock is not None:
        assert host.config is not None
        image_pre_processing, network_input = host.config[0](), host.network_input(size)
        stock = host.stock

        def run(frames: Inputs) -> torch.Tensor:
            out, _ = stock(
                images=frames,
                image_pre_processing=image_pre_processing,
                network_input=network_input,
                target_device=device,
                input_color_format="bgr",
            )
            return out

        row = Row("stock", "stock pre_process_network_input", case.batch, case.mode, size)
    else:

        def run(frames: Inputs) -> torch.Tensor:
            return preprocess_reference(frames, size, mode=case.mode).to(device)

        row = Row("reference", "reference + .to(device)", case.batch, case.mode, size)
        row.note = host.notes.get("stock", "") if case.mode == "pil" else ""
    # The host baselines take tens of milliseconds per call: a short warm-up suffices.
    return _timed_row(row, case, case.inputs.__getitem__, run, case.cfg.baseline_iters, min(case.cfg.warmup, 3))


def upstream_row(case: Case, host: Host) -> Row:
    """inference-models' FastPreprocessRuntime (its own two Triton kernels)."""
    row = Row("upstream", "upstream FastPreprocessRuntime", case.batch, case.mode, case.size)
    if host.runtime_cls is None or host.config is None:
        row.status, row.note = "skipped", host.notes.get("upstream") or host.notes.get("stock", "")
        return row
    runtime = host.runtime_cls(device=case.device)
    stream = torch.cuda.Stream(case.device)
    image_pre_processing, network_input = host.config[0](), host.network_input(case.size)

    def run(frames: Inputs) -> torch.Tensor:
        result = runtime.try_preprocess(
            images=frames[0],
            input_color_format="bgr",
            image_size=None,
            image_pre_processing=image_pre_processing,
            network_input=network_input,
            stream=stream,
        )
        if result is None:
            raise LookupError
        return result.tensor

    try:
        run(case.inputs[0])
    except LookupError:
        row.status = "skipped"
        row.note = f"declined the call ({UPSTREAM_FLAG} was off when inference-models was imported?)"
        return row
    except Exception as error:  # noqa: BLE001 - a competitor's failure is reported, not fatal
        row.status, row.note = "skipped", f"failed: {type(error).__name__}: {error}"
        return row
    return _timed_row(row, case, case.inputs.__getitem__, run, case.cfg.iters, case.cfg.warmup)


def _decoded_into(pool: PinnedFramePool, inputs: list[Inputs]) -> Prepare:
    """Input j written into fresh pool frames, as a decoder writing into the pool would."""

    def prepare(j: int) -> Inputs:
        frames = [pool.acquire() for _ in inputs[j]]
        for frame, source in zip(frames, inputs[j]):
            np.copyto(frame, source)
        return frames

    return prepare


def _auto_pick(case: Case) -> str:
    if case.device.type == "cpu" and case.batch == 1:
        return "view"
    return default_ingest(case.device).choose(case.inputs[0][0])


def our_rows(case: Case) -> list[Row]:
    """preprocess() with each ingest strategy; ``pinned`` on pool frames."""
    size, device = case.size, case.device
    out = torch.empty((case.batch, 3, size, size), dtype=torch.float32, device=device)

    def run(frames: Inputs) -> torch.Tensor:
        return preprocess(frames, size, mode=case.mode, out=out, device=device)

    rows = []
    for strategy in ("auto", *STRATEGIES):
        row = Row("ours", "ours preprocess", case.batch, case.mode, size, strategy)
        prepare: Prepare = case.inputs.__getitem__
        if strategy == "pinned":
            # Two batches in flight: one being filled while the previous one is read.
            pool = PinnedFramePool(case.inputs[0][0].shape, capacity=2 * case.batch)
            prepare = _decoded_into(pool, case.inputs)
            row.note = f"frames of a PinnedFramePool({pool.capacity})" + ("" if pool.pinned else ", not page-locked")
            if case.batch == 1 and device.type == "cuda" and pool.pinned:
                row.note += ", CUDA-graph replay"
        elif strategy == "auto":
            row.note = f"picks {_auto_pick(case)}"
        with _ingest_env(strategy):
            rows.append(_timed_row(row, case, prepare, run, case.cfg.iters, case.cfg.warmup))
    return rows


KERNEL_REPS = 20  # launches per graph for the back-to-back kernel row


def _captured(fn: Callable[[], Any], device: torch.device, reps: int = 1) -> torch.cuda.CUDAGraph:
    """A CUDA graph of ``reps`` calls of ``fn``."""

    def work() -> None:
        for _ in range(reps):
            fn()

    return capture_graph(work, device)


def kernel_rows(case: Case) -> list[Row]:
    """The fused kernel alone (frame already on the device): one launch from Python, one
    CUDA-graph replay of one launch (both include the launch latency while the GPU
    idles), and its GPU time per launch with KERNEL_REPS launches back to back."""
    device, size, cfg = case.device, case.size, case.cfg
    src = torch.from_numpy(np.stack(case.inputs[0])).to(device)
    out = torch.empty((case.batch, 3, size, size), dtype=torch.float32, device=device)
    tables = resize_tables((int(src.shape[1]), int(src.shape[2])), (size, size), case.mode, device)
    kernel_name = "band" if tables.band is not None else "gather"

    def launch(_: Any = None) -> torch.Tensor:
        return resize_normalize(src, out, tables, IMAGENET_MEAN, IMAGENET_STD, bgr=True)

    kernel = Row("floor", "floor kernel", case.batch, case.mode, size, note=f"{kernel_name} kernel")
    graph = Row("floor", "floor kernel CUDA graph", case.batch, case.mode, size, clock="cuda-events")
    back_to_back = Row("floor", "floor kernel back-to-back", case.batch, case.mode, size, clock="cuda-events")
    back_to_back.note = f"{KERNEL_REPS} launches in one CUDA graph"
    if device.type != "cuda":
        wall, _ = time_wall(_no_input, launch, n_inputs=1, iters=cfg.iters, warmup=cfg.warmup, device=device)
        kernel.median_ms, kernel.p99_ms = _summary(wall, case.batch)
        kernel.max_abs_diff = max_abs_diff(_no_input, launch, case.refs[:1], device)
        for row in (graph, back_to_back):
            row.status, row.note = "skipped", CUDA_ONLY_NOTE
        return [kernel, graph, back_to_back]
    kernel.clock = "cuda-events"
    times = time_events(launch, iters=cfg.iters, warmup=cfg.warmup, device=device)
    kernel.median_ms, kernel.p99_ms = _summary(times, case.batch)
    kernel.max_abs_diff = max_abs_diff(_no_input, launch, case.refs[:1], device)

    for row, reps in ((graph, 1), (back_to_back, KERNEL_REPS)):
        captured = _captured(launch, device, reps)

        def replay(_: Any = None, captured: torch.cuda.CUDAGraph = captured) -> torch.Tensor:
            captured.replay()
            return out

        times = time_events(replay, iters=cfg.iters, warmup=cfg.warmup, device=device)
        row.median_ms, row.p99_ms = _summary([t / reps for t in times], case.batch)
        out.zero_()
        row.max_abs_diff = max_abs_diff(_no_input, replay, case.refs[:1], device)
    return [kernel, graph, back_to_back]


def htod_rows(inputs: list[Inputs], batch: int, device: torch.device, cfg: Config) -> list[Row]:
    """Copy alone: from page-locked memory (a call, and one replay of a CUDA graph of
    the copy: the least host work that moves a page-locked frame), from the rotating
    pageable frames directly, and through the staging strategies (one multi-threaded
    host copy; row chunks by worker threads, overlapping their DMA) without the kernel.

    Before each page-locked copy the next frame is written into the page-locked buffer,
    as a decoder would and as the pool-frame rows do: that write leaves the CPU caches
    cold, which the host cost of the following calls includes."""
    pinned_row = Row("floor", "floor HtoD page-locked", batch)
    pinned_graph_row = Row("floor", "floor HtoD page-locked CUDA graph", batch, note="one replay")
    pageable_row = Row("floor", "floor HtoD pageable", batch)
    staged = [Row("floor", f"floor HtoD via {strategy}", batch, strategy=strategy) for strategy in ("staging", "chunked")]
    launch_row = Row("floor", "floor CUDA graph launch", batch, clock="cuda-events", note="one 1-element memset")
    if device.type != "cuda":
        rows = [pinned_row, pinned_graph_row, pageable_row, *staged, launch_row]
        for row in rows:
            row.status, row.note = "skipped", CUDA_ONLY_NOTE
        return rows
    target = torch.empty((batch, *inputs[0][0].shape), dtype=torch.uint8, device=device)
    host = torch.from_numpy(np.stack(inputs[0])).pin_memory()
    host_frames = host.numpy()

    def decoded(j: int) -> None:
        for slot, frame in zip(host_frames, inputs[j]):
            np.copyto(slot, frame)

    def pageable(frames: Inputs) -> torch.Tensor:
        for slot, frame in zip(target, frames):
            slot.copy_(torch.from_numpy(frame), non_blocking=True)
        return target

    def pinned(_: Any) -> torch.Tensor:
        return target.copy_(host, non_blocking=True)

    pinned_graph = _captured(lambda: pinned(None), device)
    runs = [
        (pinned_row, decoded, pinned),
        (pinned_graph_row, decoded, lambda _: pinned_graph.replay()),
        (pageable_row, inputs.__getitem__, pageable),
    ]
    for row in staged:
        ingest = FrameIngest(device, strategy=row.strategy)
        runs.append((row, inputs.__getitem__, lambda frames, ingest=ingest: ingest.upload(frames).wait()))
    for row, prepare, run in runs:
        wall, cpu = time_wall(prepare, run, n_inputs=len(inputs), iters=cfg.iters, warmup=cfg.warmup, device=device)
        row.median_ms, row.p99_ms = _summary(wall, batch)
        row.cpu_ms = float(np.mean(cpu)) / batch
    # What a one-launch graph replay costs with next to no work: the latency included
    # in the "CUDA graph" rows, which time one replay while the GPU idles.
    cell = target.view(-1)[:1]
    memset = _captured(cell.zero_, device)
    times = time_events(memset.replay, iters=cfg.iters, warmup=cfg.warmup, device=device)
    launch_row.median_ms, launch_row.p99_ms = _summary(times, 1)
    return [pinned_row, pinned_graph_row, pageable_row, *staged, launch_row]


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------


def _versions() -> dict[str, str | None]:
    def dist(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    import cv2
    import PIL
    import triton

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "pillow": PIL.__version__,
        "inference-models": dist("inference-models"),
        "inference-triton-preproc": __version__,
    }


def _device_info(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": props.name, "capability": f"{props.major}.{props.minor}", "interpreted": False}
    return {"type": "cpu", "name": platform.processor() or platform.machine(), "interpreted": interpreted()}


def run_bench(cfg: Config, device: torch.device | None = None) -> dict[str, Any]:
    """Run every case and return the report (what ``--json`` writes)."""
    device = device or resolve_device(cfg.device)
    frames, description = load_frames(cfg.source, cfg.distinct)
    cuda = device.type == "cuda"
    host = load_host(cuda)
    notes = [f"{key}: {text}" for key, text in host.notes.items() if text != CUDA_ONLY_NOTE]
    if not cuda:
        notes.append("on the CPU, upstream's runtime, the HtoD floors and CUDA-graph replay are skipped (CUDA only)")
    rows: list[Row] = []
    for batch in cfg.batches:
        # Distinct batch j holds frames j*batch ... (j+1)*batch - 1, wrapping around.
        picks = [[f % len(frames) for f in range(j * batch, (j + 1) * batch)] for j in range(len(frames))]
        inputs = [[frames[f] for f in pick] for pick in picks]
        rows += htod_rows(inputs, batch, device, cfg)
        for size in cfg.sizes:
            for mode in cfg.modes:
                logger.info("case: %s %dx%d, batch %d", mode, size, size, batch)
                per_frame = [preprocess_reference(f, size, mode=mode) for f in frames]
                refs = [torch.cat([per_frame[f] for f in pick]) for pick in picks]
                case = Case(size, mode, batch, inputs, refs, device, cfg)
                rows.append(baseline_row(case, host))
                if mode == "pil" and batch == 1:
                    rows.append(upstream_row(case, host))
                rows += our_rows(case)
                rows += kernel_rows(case)
    height, width = frames[0].shape[:2]
    return {
        "schema": 1,
        "device": _device_info(device),
        "versions": _versions(),
        "config": {
            **asdict(cfg),
            "source_description": description,
            "source_hw": [int(height), int(width)],
            "chunked_min_bytes": CHUNKED_MIN_BYTES,
            "chunk_threads": CHUNK_THREADS,
            "chunks_per_frame": CHUNKS_PER_FRAME,
            "cpu_threads": torch.get_num_threads(),
            "ingest_env": os.environ.get(INGEST_ENV),
        },
        "notes": notes,
        "rows": [asdict(r) for r in rows],
    }


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------

COLUMNS = ("path", "strategy", "mode", "size", "batch", "median ms", "p99 ms", "cpu ms", "max |diff|", "note")


def _cells(row: dict[str, Any]) -> list[str]:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    diff = row["max_abs_diff"]
    note = row["note"] if row["status"] == "ok" else f"skipped: {row['note']}"
    if row["clock"] == "cuda-events":
        note = "; ".join(filter(None, ["GPU time", note]))
    return [
        row["path"],
        row["strategy"] or "",
        row["mode"] or "",
        "" if row["size"] is None else str(row["size"]),
        str(row["batch"]),
        ms(row["median_ms"]),
        ms(row["p99_ms"]),
        ms(row["cpu_ms"]),
        "-" if diff is None else f"{diff:.2e}",
        note,
    ]


def format_table(report: dict[str, Any]) -> str:
    """Plain-text table (per-frame milliseconds)."""
    lines = [[*COLUMNS]] + [_cells(r) for r in report["rows"]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)


def print_report(report: dict[str, Any]) -> None:
    device = report["device"]
    title = f"{device['name']} ({device['type']}): {report['config']['source_description']}; milliseconds per frame"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        console = None
    else:
        console = Console()
    # Rich squeezes wide tables into 80 columns when the output is not a terminal.
    if console is None or not console.is_terminal:
        print(title)
        print(format_table(report))
    else:
        table = Table(title=title)
        for column in COLUMNS:
            table.add_column(column, justify="right" if column.endswith(("ms", "|diff|")) else "left")
        for row in report["rows"]:
            table.add_row(*_cells(row))
        console.print(table)
    for note in report["notes"]:
        print(f"note: {note}")


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive ints separated by commas, got {text!r}")
    return values


def _mode_list(text: str) -> list[Mode]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    modes = [m for m in MODES if m in values]
    if not values or len(modes) != len(set(values)):
        raise argparse.ArgumentTypeError(f"expected modes among {', '.join(MODES)}, got {text!r}")
    return modes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m inference_triton_preproc.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source", default=DEFAULT_SOURCE, help="HxW (sample clip resized) or an image/video file (default 1080x1920)"
    )
    parser.add_argument(
        "--sizes", type=_int_list, default=[312, 432, 624], help="target squares, comma-separated (default 312,432,624)"
    )
    parser.add_argument(
        "--modes", type=_mode_list, default=list(MODES), help="kernel modes, comma-separated (default pil,cv2,torch)"
    )
    parser.add_argument("--batch", type=_int_list, default=[1, 4], dest="batches", help="batch sizes (default 1,4)")
    parser.add_argument("--iters", type=int, default=200, help="timed calls per row (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls first (default 20)")
    parser.add_argument("--baseline-iters", type=int, default=30, help="timed calls of the slow host baselines (default 30)")
    parser.add_argument("--distinct", type=int, default=8, help="distinct frames rotated through (default 8)")
    parser.add_argument("--device", default=None, help="compute device (default: CUDA, else CPU under TRITON_INTERPRET=1)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["pipeline"]:
        from .bench_pipeline import main as pipeline_main

        return pipeline_main(argv[1:])
    args = build_parser().parse_args(argv)
    if min(args.iters, args.baseline_iters, args.distinct) <= 0 or args.warmup < 0:
        print("error: --iters, --baseline-iters and --distinct must be positive, --warmup >= 0", file=sys.stderr)
        return 2
    cfg = Config(
        source=args.source,
        sizes=args.sizes,
        modes=args.modes,
        batches=args.batches,
        iters=args.iters,
        warmup=args.warmup,
        baseline_iters=args.baseline_iters,
        distinct=args.distinct,
        device=args.device,
    )
    unwritable = None if args.json is None else check_output_file(args.json, "--json")
    try:
        if unwritable is not None:
            raise BenchInputError(unwritable)
        device = resolve_device(cfg.device)
        report = run_bench(cfg, device)
    # resolve_device's ValueError names --device's value.
    except (BenchInputError, RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
