"""CUDA-graph replay of the work for frames at fixed addresses.

On the measured H100 host, issuing work from Python costs tens of microseconds per
call (a Triton launch alone ~40-100 µs there), as long as the DMA and longer than the
kernel. When the frame lives at a fixed address and the output buffer is fixed too
(an engine input buffer, passed as ``out=``), the work is captured once as a CUDA
graph and replayed: one call. Two kinds of graph are captured:

* a page-locked :class:`~inference_triton_preproc.runtime.pinned.PinnedFramePool`
  frame: its copy to the GPU and the kernel;
* a frame uploaded into an ingest ring buffer: the kernel alone.

A graph reads its source and writes ``out`` at the addresses it was captured with, so
its key holds both; a pool of 2 frames feeding a ring of 3 outputs captures at most
6 graphs per size and mode.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import torch

from .._env import GRAPHS_VAR, parse_flag

logger = logging.getLogger(__name__)

GRAPHS_ENV = GRAPHS_VAR

V = TypeVar("V")


_parsed: tuple[str | None, bool] = (None, True)


def graphs_enabled() -> bool:
    """``RFDETR_TRITON_PREPROC_CUDA_GRAPHS`` (default on); read per call, parsed when it changes."""
    global _parsed
    raw = os.environ.get(GRAPHS_ENV)
    if raw != _parsed[0]:
        _parsed = (raw, parse_flag(GRAPHS_ENV, raw, default=True))
    return _parsed[1]


def capture_graph(work: Callable[[], None], device: torch.device) -> torch.cuda.CUDAGraph:
    """``work()`` (CUDA work on the current stream) captured as a graph, after one run
    outside the capture on a side stream (Triton's first launch compiles and caches its
    launcher, which a capture must not do). The side stream is ordered after the
    current one both ways, so the run is ordered like any other work."""
    current = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device=device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        work()
    current.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # Only this thread's calls are checked during the capture: another thread's CUDA work
    # (a pipeline's other stages) neither breaks it nor is broken by it.
    with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
        work()
    current.wait_stream(side)
    return graph


class CapturedGraph:
    """One captured graph and the tensors it addresses (kept alive with it)."""

    __slots__ = ("graph", "keep", "on_replay")

    def __init__(
        self,
        graph: torch.cuda.CUDAGraph,
        keep: tuple[object, ...],
        on_replay: Callable[[], object] | None,
    ) -> None:
        self.graph = graph
        self.keep = keep
        self.on_replay = on_replay

    def replay(self) -> None:
        """Replay on the current stream, then call ``on_replay()``."""
        self.graph.replay()
        if self.on_replay is not None:
            self.on_replay()


class LruCache(Generic[V]):
    """Thread-safe mapping of at most ``capacity`` entries, least recently used dropped first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[Hashable]:
        """The keys, least recently used first (a snapshot)."""
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def get(self, key: Hashable) -> V | None:
        """The entry under ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: Hashable, entry: V) -> V:
        """Store ``entry`` under ``key`` (dropping the least recently used beyond capacity) and return it."""
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            self._evict()
        return entry

    def add(self, key: Hashable, entry: V) -> bool:
        """Store ``entry`` under ``key`` unless one is there; whether it was stored."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return False
            self._entries[key] = entry
            self._evict()
            return True

    def _evict(self) -> None:
        """Drop the least recently used entries beyond capacity (the lock held)."""
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


class GraphCache(LruCache[CapturedGraph]):
    """Captured graphs by key, least recently used dropped beyond ``capacity``.

    The key must identify everything the graph depends on (buffer addresses, shapes,
    dtypes, arguments): a hit is replayed without further checks.
    """

    def __init__(self, capacity: int = 64) -> None:
        super().__init__(capacity)

    def capture(
        self,
        key: Hashable,
        work: Callable[[], None],
        device: torch.device,
        *,
        keep: tuple[object, ...] = (),
        on_replay: Callable[[], object] | None = None,
    ) -> CapturedGraph:
        """Capture ``work()`` (CUDA work on the current stream: copies, kernel launches)
        as a graph, store it under ``key`` and return it. ``keep``: tensors the graph
        and events the graph addresses that nothing else keeps alive. ``on_replay()`` runs
        after each replay (to record, on the current stream, that a host buffer was read).
        """
        graph = capture_graph(work, device)
        logger.debug("captured a CUDA graph for %s", key)
        return self.put(key, CapturedGraph(graph, keep, on_replay))
