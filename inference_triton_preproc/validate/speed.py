"""How fast an arm ran: measured inside the arm process, summarised and compared outside it.

Arm side (timing instrumentation of the arm process only; nothing here is part of the plugin):

* :class:`SpeedRecorder`: per-frame latency, from when the pipeline's inference step
  takes a frame (its ``on_video_frame`` is called with it) until ``on_prediction``
  receives that frame's result; pipeline fps after the warm-up frames (frames after the
  warm-up over the time between the last warm-up frame's and the last frame's arrival
  at ``on_prediction``); host CPU per frame over the same window (the CPU time of every
  thread of the arm process, less what the arm's own ``on_prediction`` spent writing
  the dump); the time Python's cyclic garbage collector ran per frame over the same
  window, and its full (oldest-generation) collections.
* :class:`StageTimer`: wall time per call of the inference-models model's
  ``pre_process``, ``forward`` and ``post_process`` and of the call around them
  (``adapter.infer`` of ``inference``; the arm's own model call at the ``model`` level);
  "response" is the outer call less the three stages (what the adapter builds from the
  model's result). On CUDA each stage ends with a device synchronisation, so that the
  GPU work a stage queued is counted in that stage.
* :func:`forward_floor`: ``model.forward`` alone on a preprocessed frame of the same
  source, back to back: the time per frame no pipeline around this model can beat.

Parent side: :func:`summarise_runs` (median and spread over repeated runs of an arm)
and :func:`compare_speeds` (A beside B, with B/A ratios), both JSON-ready.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

#: Stages of :class:`StageTimer`, in call order.
STAGES = ("pre_process", "forward", "post_process", "response")
_MODEL_METHODS = ("pre_process", "forward", "post_process")
_OLDEST_GENERATION = len(gc.get_threshold()) - 1  # a full collection


def _ms(seconds: float) -> float:
    return seconds * 1e3


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _cuda_sync() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class StageTimer:
    """Wall time per call of a model's stages and of the call around them.

    :meth:`attach` wraps the three methods on the model *instance* (the class, and so
    the plugin's own wrappers on it, stay as they are); :meth:`outer` wraps the call
    that runs them. Calls of the first ``warmup`` outer calls are left out of the medians.
    """

    def __init__(self, warmup: int = 1) -> None:
        self.warmup = warmup
        self.model: Any = None
        self.originals: dict[str, Callable[..., Any]] = {}
        self._lock = threading.Lock()
        self._current: dict[str, float] = {}
        self._calls: list[dict[str, float]] = []

    def attach(self, model: Any) -> None:
        """Time ``model``'s ``pre_process``, ``forward`` and ``post_process`` (once per model)."""
        if self.model is not None:
            return
        self.model = model
        for name in _MODEL_METHODS:
            original = getattr(model, name, None)
            if original is None:
                continue
            self.originals[name] = original
            setattr(model, name, self._timed(name, original))

    def _timed(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                _cuda_sync()
                self._current[name] = self._current.get(name, 0.0) + time.perf_counter() - started

        return timed

    def outer(self, call: Callable[..., Any]) -> Callable[..., Any]:
        """``call`` timed as one outer call (adapter.infer, or the arm's model call)."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self._lock:  # one pipeline thread calls the model; the lock keeps stages per call
                self._current = {}
                started = time.perf_counter()
                result = call(*args, **kwargs)
                _cuda_sync()
                total = time.perf_counter() - started
                stages = dict(self._current)
                stages["response"] = total - sum(stages.get(name, 0.0) for name in _MODEL_METHODS)
                stages["total"] = total
                self._calls.append(stages)
            return result

        return timed

    def summary(self) -> dict[str, Any]:
        """Median ms per stage over the calls after the warm-up (``None`` when not seen) and the call count."""
        calls = self._calls[self.warmup :] if len(self._calls) > self.warmup else self._calls
        out: dict[str, Any] = {"calls": len(self._calls), "timed_calls": len(calls)}
        for name in (*STAGES, "total"):
            values = [_ms(c[name]) for c in calls if name in c]
            out[f"{name}_ms"] = _median(values)
        return out


class GcClock:
    """The runs of Python's cyclic garbage collector from construction until :meth:`close`.

    ``runs``: ``(perf_counter at the end, generation, seconds)`` per collection;
    ``seconds``: their total.
    """

    def __init__(self) -> None:
        self.runs: list[tuple[float, int, float]] = []
        self.seconds = 0.0
        self._started: float | None = None
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        # Collections do not nest, and run in whichever thread triggers them.
        now = time.perf_counter()
        if phase == "start":
            self._started = now
        elif self._started is not None:
            self.runs.append((now, info["generation"], now - self._started))
            self.seconds += now - self._started
            self._started = None

    def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)


class SpeedRecorder:
    """Per-frame latency, fps after warm-up and host CPU per frame of a pipeline run."""

    def __init__(self, warmup: int = 1) -> None:
        self.warmup = warmup
        self._taken: dict[int, float] = {}
        self._arrivals: list[float] = []
        self.latencies_ms: list[float] = []
        self._window_start: tuple[float, float] | None = None  # (perf_counter, process_time)
        self._window_end: tuple[float, float] | None = None
        self._sink_cpu = 0.0  # thread CPU the sink spent inside the window
        self._lock = threading.Lock()
        self.gc = GcClock()

    def close(self) -> None:
        """Stop timing garbage collections (the summary keeps those seen so far)."""
        self.gc.close()

    def taken(self, frame_ids: Sequence[int]) -> None:
        """The pipeline's inference step takes these frames now."""
        now = time.perf_counter()
        with self._lock:
            for frame_id in frame_ids:
                self._taken[frame_id] = now

    def arrived(self, frame_id: int) -> None:
        """``on_prediction`` received the result of ``frame_id`` now."""
        now, cpu = time.perf_counter(), time.process_time()
        with self._lock:
            taken = self._taken.pop(frame_id, None)
            if taken is not None:
                self.latencies_ms.append(_ms(now - taken))
            self._arrivals.append(now)
            if len(self._arrivals) == self.warmup:
                self._window_start = (now, cpu)
                self._sink_cpu = 0.0
            elif len(self._arrivals) > self.warmup:
                self._window_end = (now, cpu)

    def sink_cpu(self, seconds: float) -> None:
        """CPU time the arm's own ``on_prediction`` spent on one frame (dumping), left out of host CPU."""
        with self._lock:
            if self._window_start is not None:
                self._sink_cpu += seconds

    def summary(self) -> dict[str, Any]:
        """JSON-ready: ``frames``, ``warmup_frames``, ``latency_ms`` (per frame, arrival order),
        ``latency_ms_median``, ``latency_ms_p99``, ``fps``, ``cpu_ms_per_frame``,
        ``gc_ms_per_frame`` and ``gc_full_collections`` (all four after the warm-up;
        ``None`` with no frame after it), and ``gc_frozen_objects`` (the collector's
        permanent generation now: non-zero once ``RFDETR_TRITON_GC_FREEZE`` froze)."""
        frames = len(self._arrivals)
        fps = cpu = gc_ms = full = None
        if self._window_start is not None and self._window_end is not None:
            after = frames - self.warmup
            start, end = self._window_start[0], self._window_end[0]
            elapsed = end - start
            # The last frame's sink work ran after the window closed, so it is not subtracted.
            cpu_spent = self._window_end[1] - self._window_start[1] - self._sink_cpu
            fps = after / elapsed if elapsed > 0 else None
            cpu = _ms(max(cpu_spent, 0.0)) / after
            runs = [(generation, seconds) for finished, generation, seconds in self.gc.runs if start < finished <= end]
            gc_ms = _ms(sum(seconds for _, seconds in runs)) / after
            full = sum(1 for generation, _ in runs if generation == _OLDEST_GENERATION)
        lat = self.latencies_ms
        return {
            "frames": frames,
            "warmup_frames": min(self.warmup, frames),
            "latency_ms": [round(v, 4) for v in lat],
            "latency_ms_median": _median(lat[self.warmup :] or lat),
            "latency_ms_p99": _percentile(lat[self.warmup :] or lat, 99),
            "fps": fps,
            "cpu_ms_per_frame": cpu,
            "gc_ms_per_frame": gc_ms,
            "gc_full_collections": full,
            "gc_frozen_objects": gc.get_freeze_count(),
        }


def forward_floor(
    model: Any, forward: Callable[..., Any], image: np.ndarray, iters: int, warmup: int = 2
) -> dict[str, Any]:
    """Median ms of ``forward`` alone on ``model.pre_process([image])``, ``iters`` calls back to back.

    Args:
        model: the inference-models model (its ``pre_process`` prepares the input once).
        forward: the model's unwrapped ``forward``.
        image: one BGR uint8 ``(H, W, 3)`` frame of the source.
        iters: timed calls (> 0).
        warmup: untimed calls first.
    """
    tensor, _ = model.pre_process([image], input_color_format="bgr")
    for _ in range(warmup):
        forward(tensor)
    _cuda_sync()
    times = []
    for _ in range(iters):
        started = time.perf_counter()
        forward(tensor)
        _cuda_sync()
        times.append(_ms(time.perf_counter() - started))
    return {"forward_ms_median": _median(times), "forward_ms_p99": _percentile(times, 99), "iters": iters}


# --------------------------------------------------------------------------- #
# Parent side
# --------------------------------------------------------------------------- #

#: Scalar speed metrics: (key in an arm's speed record, label, unit, True when higher is better).
METRICS: tuple[tuple[str, str, str, bool], ...] = (
    ("fps", "pipeline fps after warm-up", "fps", True),
    ("latency_ms_median", "latency, frame to on_prediction, median", "ms", False),
    ("latency_ms_p99", "latency, frame to on_prediction, p99", "ms", False),
    ("cpu_ms_per_frame", "host CPU per frame", "ms", False),
    ("gc_ms_per_frame", "Python garbage collection per frame", "ms", False),
    ("stages.pre_process_ms", "pre_process, median", "ms", False),
    ("stages.forward_ms", "forward, median", "ms", False),
    ("stages.post_process_ms", "post_process, median", "ms", False),
    ("stages.response_ms", "response building, median", "ms", False),
    ("floor.forward_ms_median", "forward alone (floor), median", "ms", False),
)


def metric(record: Mapping[str, Any] | None, key: str) -> float | None:
    """Value of a dotted ``key`` in one arm's speed record, or ``None``."""
    value: Any = record
    for part in key.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summarise_runs(records: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
    """Per metric over repeated runs of one arm: ``median``, ``min``, ``max`` and ``values`` (run order)."""
    out: dict[str, Any] = {"runs": len(records)}
    for key, *_ in METRICS:
        values = [v for v in (metric(r, key) for r in records) if v is not None]
        out[key] = {
            "median": _median(values),
            "min": min(values) if values else None,
            "max": max(values) if values else None,
            "values": values,
        }
    return out


def compare_speeds(a: Sequence[Mapping[str, Any] | None], b: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
    """A beside B: per metric the summaries of both arms and ``ratio`` = median B / median A.

    Returns:
        ``{"runs": n, "metrics": [{"key", "label", "unit", "higher_is_better", "a", "b", "ratio"}, ...],
        "latency_ms": {"a": [...], "b": [...]}}`` with the per-frame latencies of each arm's first run.
    """
    sa, sb = summarise_runs(a), summarise_runs(b)
    rows = []
    for key, label, unit, higher in METRICS:
        ma, mb = sa[key]["median"], sb[key]["median"]
        rows.append(
            {
                "key": key,
                "label": label,
                "unit": unit,
                "higher_is_better": higher,
                "a": sa[key],
                "b": sb[key],
                "ratio": mb / ma if ma and mb is not None else None,
            }
        )
    first = {
        arm: list((records[0] or {}).get("latency_ms") or []) if records else []
        for arm, records in (("a", a), ("b", b))
    }
    return {"runs": min(len(a), len(b)), "metrics": rows, "latency_ms": first}
