"""Moving equal-size uint8 HWC frames from host memory to an NHWC uint8 device tensor.

Moving a 1080p frame dominates GPU preprocessing (the fused kernel takes microseconds);
how fast it goes depends on where the frame lives. Four strategies:

``pinned``    the frame is page-locked: one asynchronous DMA straight from it, no host
              copy. Frames of a :class:`~.pinned.PinnedFramePool` (e.g. decoded by
              :func:`~.producer.pinned_video_source`) take this path.
``pageable``  ``device.copy_(torch.from_numpy(frame))``: the driver stages the pageable
              frame through its own page-locked buffer, in the calling thread.
``staging``   one host copy into a reusable page-locked buffer with PyTorch's
              multi-threaded CPU copy (its OpenMP intra-op threads), then one DMA.
``chunked``   :data:`CHUNKS_PER_FRAME` row chunks copied into a page-locked buffer by
              the calling thread (the first chunk) and :data:`CHUNK_THREADS` persistent
              worker threads (``np.copyto`` releases the GIL); each chunk's DMA is
              queued as soon as its rows are staged, so copies and transfers overlap.

Measured on an H100 host (PCIe gen5, 16 cores) for a 1080p frame in pageable memory,
until the GPU has the bytes, and the process CPU that costs per frame: staging
0.42 ms for 6.5 ms of CPU (PyTorch's 16 OpenMP threads spin-wait after each copy;
1.0 ms of CPU and 0.54 ms with ``OMP_WAIT_POLICY=PASSIVE``), chunked 0.47-0.55 ms for
0.9 ms, pageable 0.62-0.76 ms for 0.7-0.95 ms, a single ``np.copyto`` into page-locked
memory plus the DMA (what inference-models' own Triton runtime does) 0.87 ms for
0.8 ms; from page-locked memory 0.13 ms. ``auto`` (the default) picks ``pinned`` for
page-locked frames, ``chunked`` from :data:`CHUNKED_MIN_BYTES` per frame (thread
hand-offs cost more than they save on small frames) and ``pageable`` below: the
fastest paths that do not multiply the CPU a frame costs.
``RFDETR_TRITON_PREPROC_INGEST`` overrides it.

Hot path: after the first frames of a shape, nothing is allocated. Each shape gets a
ring of :data:`RING_SIZE` device buffers (and page-locked staging buffers where a
strategy needs them); copies are queued on one stream without waiting for the GPU, and
a CUDA event marks their completion. A ring slot is rewritten only after its previous
consumer is done (see :class:`IngestedFrames`), and a staging buffer only after the
DMA that read it completed. Ring buffers keep their addresses for the life of the
ingest, so a kernel reading a slot can be captured in a CUDA graph and replayed.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import numpy as np
import torch

from .._arrays import host_tensor
from .._env import INGEST_CHOICES, INGEST_VAR, ConfigurationError
from . import pinned

logger = logging.getLogger(__name__)

INGEST_ENV = INGEST_VAR
IngestStrategy = Literal["pinned", "pageable", "staging", "chunked"]
# The choices are declared with the package's other variables; all but "auto" are strategies.
STRATEGIES = cast("tuple[IngestStrategy, ...]", INGEST_CHOICES[1:])

# Frames of at least this many bytes go ``chunked`` under ``auto`` (4 MiB: 1080p at
# 5.9 MiB does, 720p at 2.6 MiB does not). The bench
# (``python -m inference_triton_preproc.bench --source 720x1280``) re-checks it.
CHUNKED_MIN_BYTES = 4 << 20
CHUNK_THREADS = 2  # with the calling thread, 3 copiers: 2x4 and 4x4 measured alike, 8 slower
CHUNKS_PER_FRAME = 4
RING_SIZE = 3  # one slot being filled, one being read, one spare for pipelining
MAX_SHAPES = 4  # rings kept per ingest; a server fed many sizes keeps only the recent ones

HostFrame = np.ndarray | torch.Tensor


def parse_ingest_strategy(value: str | None, *, source: str = INGEST_ENV) -> str:
    """``value`` as one of :data:`INGEST_CHOICES` (case and surrounding spaces ignored;
    empty or None means ``auto``).

    Raises:
        ValueError: unknown value; the message names ``source`` and the accepted values
            (a :class:`~inference_triton_preproc._env.ConfigurationError` when ``source``
            is the environment variable).
    """
    choice = (value or "auto").strip().lower() or "auto"
    if choice not in INGEST_CHOICES:
        error = ConfigurationError if source == INGEST_ENV else ValueError
        raise error(f"{source} must be one of {', '.join(INGEST_CHOICES)}; got {value!r}")
    return choice


def ingest_strategy_from_env() -> str:
    """The strategy ``RFDETR_TRITON_PREPROC_INGEST`` asks for (``auto`` when unset)."""
    return parse_ingest_strategy(os.environ.get(INGEST_ENV))


def auto_strategy(nbytes: int, page_locked: bool, chunked_min_bytes: int = CHUNKED_MIN_BYTES) -> IngestStrategy:
    """What ``auto`` picks for a host frame of ``nbytes`` on a CUDA device."""
    if page_locked:
        return "pinned"
    return "chunked" if nbytes >= chunked_min_bytes else "pageable"


class _CopyWorkers:
    """Persistent threads that run ``np.copyto`` for chunk copies (process-wide).

    A task is (destination, source, completion queue, key); the worker puts (key, error
    or None) on the queue when done. Lighter than an executor's futures: on the measured
    host a future's round trip cost tens of microseconds per chunk.
    """

    def __init__(self, count: int) -> None:
        self._tasks: queue.SimpleQueue[tuple[np.ndarray, np.ndarray, queue.SimpleQueue, int]] = queue.SimpleQueue()
        for index in range(count):
            threading.Thread(target=self._work, name=f"triton-preproc-ingest-{index}", daemon=True).start()

    def _work(self) -> None:
        while True:
            target, source, done, key = self._tasks.get()
            try:
                np.copyto(target, source)
            except BaseException as error:  # noqa: BLE001 - handed to the waiting thread
                done.put((key, error))
            else:
                done.put((key, None))

    def submit(self, target: np.ndarray, source: np.ndarray, done: queue.SimpleQueue, key: int) -> None:
        self._tasks.put((target, source, done, key))


class _Completions:
    """Waits for chunk copies submitted with one completion queue, in any order."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[tuple[int, BaseException | None]] = queue.SimpleQueue()
        self._done: dict[int, BaseException | None] = {}

    def wait(self, key: int) -> None:
        while key not in self._done:
            finished, error = self.queue.get()
            self._done[finished] = error
        error = self._done.pop(key)
        if error is not None:
            raise error


_workers: _CopyWorkers | None = None
_workers_lock = threading.Lock()


def _copy_workers() -> _CopyWorkers:
    """The process-wide chunk-copy threads, started on first use and kept."""
    global _workers
    with _workers_lock:
        if _workers is None:
            _workers = _CopyWorkers(CHUNK_THREADS)
        return _workers


def _host_array(frame: HostFrame) -> np.ndarray:
    return frame.numpy() if isinstance(frame, torch.Tensor) else frame


def _tensor_view(array: np.ndarray) -> torch.Tensor:
    """A tensor over ``array``'s memory; torch cannot express negative strides, so such
    frames are copied first (``copy``: ``ascontiguousarray`` keeps a negative stride on
    a dimension of size 1)."""
    if any(s < 0 for s in array.strides):
        array = array.copy()
    return host_tensor(array)


def _stage(staging: torch.Tensor, staging_np: np.ndarray, source: np.ndarray) -> None:
    """Copy ``source`` into page-locked ``staging`` (same shape) on the host.

    PyTorch's CPU copy splits large copies over its intra-op threads, which is what
    makes staging faster than the driver's own pageable path. Read-only arrays (which
    ``torch.from_numpy`` warns about) take numpy's single-threaded copy.
    """
    if source.flags.writeable:
        staging.copy_(_tensor_view(source))
    else:
        np.copyto(staging_np, source)


def row_bounds(height: int, chunks: int = CHUNKS_PER_FRAME) -> list[tuple[int, int]]:
    """``[first, end)`` rows of up to ``chunks`` near-equal row chunks of a frame."""
    edges = np.linspace(0, height, min(chunks, height) + 1).astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


class _Slot:
    """One ring entry: a device batch buffer, its optional staging buffer, and fences."""

    def __init__(self, shape: tuple[int, int, int, int], device: torch.device) -> None:
        self.shape = shape
        self.device = device
        self.buffer = torch.empty(shape, dtype=torch.uint8, device=device)
        self.staging: torch.Tensor | None = None
        self.staging_np: np.ndarray | None = None
        self.chunks: list[list[tuple[int, int, np.ndarray, torch.Tensor, torch.Tensor]]] | None = None
        self.generation = 0
        self.copy_stream: torch.cuda.Stream | None = None
        self.copied = torch.cuda.Event() if device.type == "cuda" else None
        self.consumed = torch.cuda.Event() if device.type == "cuda" else None
        self.consumed_recorded = False
        self.consumer_streams: list[torch.cuda.Stream] = []
        self.fences: list[torch.cuda.Event] = []
        # Host memory the last copy reads asynchronously: the staging buffer, or frames
        # page-locked elsewhere (kept alive here until that copy is known to be done).
        self.host_in_flight = False
        self.held: tuple[np.ndarray, ...] = ()

    def staging_views(self) -> tuple[torch.Tensor, np.ndarray]:
        if self.staging is None:
            self.staging = torch.empty(self.shape, dtype=torch.uint8, pin_memory=self.device.type == "cuda")
            self.staging_np = self.staging.numpy()
        assert self.staging_np is not None
        return self.staging, self.staging_np

    def chunk_views(self) -> list[list[tuple[int, int, np.ndarray, torch.Tensor, torch.Tensor]]]:
        """Per frame, per row chunk: (first row, end row, staging rows as numpy and as a
        tensor, device rows); built once per slot."""
        if self.chunks is None:
            staging, staging_np = self.staging_views()
            bounds = row_bounds(self.shape[1])
            self.chunks = [
                [(a, b, staging_np[i, a:b], staging[i, a:b], self.buffer[i, a:b]) for a, b in bounds]
                for i in range(self.shape[0])
            ]
        return self.chunks

    def reclaim(self, stream: torch.cuda.Stream | None) -> None:
        """Make the slot writable for a copy queued on ``stream`` (None on the CPU).

        Host side: wait for the previous DMA only if it read host memory that is about
        to be rewritten or released (usually long done: it was queued a ring ago).
        Device side, without blocking the host: the new copy waits for the consumer's
        event when one was recorded, else for all work queued so far on every other
        stream that used the buffer.
        """
        self.generation += 1
        if stream is None:
            return
        if self.host_in_flight:
            assert self.copied is not None
            self.copied.synchronize()
            self.host_in_flight = False
            self.held = ()
        if self.consumed_recorded:
            assert self.consumed is not None
            stream.wait_event(self.consumed)
        else:
            users = [self.copy_stream, *self.consumer_streams]
            foreign = [s for i, s in enumerate(users) if s is not None and s != stream and s not in users[:i]]
            while len(self.fences) < len(foreign):
                self.fences.append(torch.cuda.Event())
            for other, fence in zip(foreign, self.fences):
                fence.record(other)
                stream.wait_event(fence)
        self.consumed_recorded = False
        self.consumer_streams = []
        self.copy_stream = stream

    def retire(self) -> None:
        """Before the slot is dropped: let the caching allocator know which streams used
        the buffer, and let frames held for an unfinished DMA go only once it is done."""
        for user in (self.copy_stream, *self.consumer_streams):
            if user is not None:
                self.buffer.record_stream(user)
        if self.host_in_flight and self.copied is not None:
            self.copied.synchronize()


@dataclass(eq=False)
class IngestedFrames:
    """Frames on the device: ``tensor`` and how to use it safely.

    Attributes:
        tensor: uint8 ``[N, H, W, C]`` on the target device. A ring buffer owned by the
            :class:`FrameIngest` (or a view of the caller's frame when no copy was
            needed). Valid until the ring comes back to this slot, ``ring_size``
            uploads of this shape later.
        ready_event: recorded on ``stream`` after the copies (None on the CPU or when
            nothing was copied). Consumers on another stream must wait on it:
            :meth:`wait` does.
        stream: the stream the copies were queued on (None on the CPU).
        strategies: per frame, the strategy used (``"view"`` for no copy, ``"device"``
            for a device-to-device copy).
    """

    tensor: torch.Tensor
    ready_event: torch.cuda.Event | None
    stream: torch.cuda.Stream | None
    strategies: tuple[str, ...]
    _slot: _Slot | None = field(default=None, repr=False)
    _generation: int = field(default=0, repr=False)

    def _live_slot(self) -> _Slot | None:
        if self._slot is not None and self._slot.generation != self._generation:
            raise RuntimeError(
                "this upload's ring buffer was already reused by a later upload; consume uploads "
                "before ring_size more uploads of the same shape, or raise ring_size"
            )
        return self._slot

    @property
    def in_ring(self) -> bool:
        """Whether :attr:`tensor` is a ring buffer of the ingest, whose address stays the
        same for every upload of this shape that lands in that ring slot."""
        return self._slot is not None

    def _stream_or_current(self, stream: torch.cuda.Stream | None) -> torch.cuda.Stream:
        return stream if stream is not None else torch.cuda.current_stream(self.tensor.device)

    def wait(self, stream: torch.cuda.Stream | None = None) -> torch.Tensor:
        """Make ``stream`` (default: the device's current stream) wait for the copies
        without blocking the host, and return :attr:`tensor`.

        The stream is remembered as a consumer: unless :meth:`record_consumed` is called,
        the slot is rewritten only after all work queued on it by then has finished.
        """
        slot = self._live_slot()
        if self.stream is None or slot is None:
            return self.tensor
        consumer = self._stream_or_current(stream)
        if consumer != self.stream:
            assert self.ready_event is not None
            consumer.wait_event(self.ready_event)
            if consumer not in slot.consumer_streams:
                slot.consumer_streams.append(consumer)
        return self.tensor

    def record_consumed(self, stream: torch.cuda.Stream | None = None) -> None:
        """Mark the point on ``stream`` (default: current) after which :attr:`tensor` is no
        longer read; call it right after queuing the last reader (kernel, engine).

        The slot's next copy then waits for exactly that point rather than for
        everything queued on the consumer streams.
        """
        slot = self._live_slot()
        if self.stream is None or slot is None:
            return
        assert slot.consumed is not None
        slot.consumed.record(self._stream_or_current(stream))
        slot.consumed_recorded = True


class FrameIngest:
    """Uploads batches of equal-size uint8 HWC frames to ``device`` (see the module docs).

    Args:
        device: target device (CUDA, or the CPU when the kernels run under the Triton
            interpreter: copies are then plain host copies and nothing is asynchronous).
        strategy: one of :data:`INGEST_CHOICES`; None reads ``RFDETR_TRITON_PREPROC_INGEST``
            at every upload (so it can be changed at run time).
        stream: stream for the copies; None: the device's current stream at each upload.
        ring_size: device buffers per shape (>= 1).
        max_shapes: shapes whose rings are kept (least recently used dropped first).

    One instance serialises its uploads (a lock); give each thread its own, as
    :func:`default_ingest` does.
    """

    def __init__(
        self,
        device: str | torch.device,
        *,
        strategy: str | None = None,
        stream: torch.cuda.Stream | None = None,
        ring_size: int = RING_SIZE,
        max_shapes: int = MAX_SHAPES,
        chunked_min_bytes: int = CHUNKED_MIN_BYTES,
    ) -> None:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.type not in ("cuda", "cpu"):
            raise ValueError(f"device must be a CUDA device or the CPU, got {device}")
        if ring_size < 1 or max_shapes < 1:
            raise ValueError(f"ring_size and max_shapes must be >= 1, got {ring_size} and {max_shapes}")
        self.device = device
        self.strategy = None if strategy is None else parse_ingest_strategy(strategy, source="strategy")
        self.stream = stream
        self.ring_size = ring_size
        self.max_shapes = max_shapes
        self.chunked_min_bytes = chunked_min_bytes
        self._rings: OrderedDict[tuple[int, int, int, int], tuple[list[_Slot], list[int]]] = OrderedDict()
        self._lock = threading.Lock()

    def choose(self, frame: HostFrame) -> IngestStrategy:
        """The strategy ``auto`` uses for this host frame in a batch on this ingest's
        device (on the CPU: ``pageable``; a lone frame there is viewed, not copied)."""
        array = _host_array(frame)
        if self.device.type != "cuda":
            return "pageable"
        return auto_strategy(array.nbytes, _page_locked(array), self.chunked_min_bytes)

    def upload(self, frames: Sequence[HostFrame], *, stream: torch.cuda.Stream | None = None) -> IngestedFrames:
        """Queue the copy of ``frames`` into one ``[N, H, W, C]`` uint8 device tensor.

        Args:
            frames: equal-size uint8 HWC frames: numpy arrays (any strides, negative
                ones included) or torch tensors (host or device).
            stream: overrides the ingest's stream for this upload.

        Returns:
            :class:`IngestedFrames`. Never waits for the GPU, except to rewrite a
            staging buffer whose DMA (queued ``ring_size`` uploads ago) is still running.

        A lone frame needs no copy when it is a tensor already on the device, or a host
        frame while the device is the CPU under ``auto``: its view is returned.
        """
        if not frames:
            raise ValueError("frames must hold at least one frame")
        shape = tuple(int(v) for v in frames[0].shape)
        if len(shape) != 3 or any(tuple(f.shape) != shape for f in frames):
            raise ValueError(f"frames must be HWC and all of one size, got {[tuple(f.shape) for f in frames]}")
        strategy = self.strategy if self.strategy is not None else ingest_strategy_from_env()
        if len(frames) == 1:
            view = self._view(frames[0], strategy)
            if view is not None:
                return IngestedFrames(view[None], None, None, ("view",))
        with self._lock:
            return self._upload(frames, (len(frames), *shape), strategy, stream)

    def _view(self, frame: HostFrame, strategy: str) -> torch.Tensor | None:
        if isinstance(frame, torch.Tensor) and frame.device == self.device:
            return frame
        if self.device.type == "cpu" and strategy == "auto":
            return _tensor_view(_host_array(frame))
        return None

    def _slot(self, key: tuple[int, int, int, int]) -> _Slot:
        ring = self._rings.get(key)
        if ring is None:
            if len(self._rings) >= self.max_shapes:
                _, (old, _) = self._rings.popitem(last=False)
                for slot in old:
                    slot.retire()
            ring = self._rings[key] = ([], [0])
        self._rings.move_to_end(key)
        slots, turn = ring
        index = turn[0]
        turn[0] = (index + 1) % self.ring_size
        if index == len(slots):
            # Slots are created on first use: a one-off frame size costs one buffer.
            slots.append(_Slot(key, self.device))
        return slots[index]

    def _upload(
        self,
        frames: Sequence[HostFrame],
        key: tuple[int, int, int, int],
        strategy: str,
        stream: torch.cuda.Stream | None,
    ) -> IngestedFrames:
        plan = [self._plan(frame, strategy) for frame in frames]
        slot = self._slot(key)
        if self.device.type != "cuda":
            slot.reclaim(None)
            self._copy(slot, frames, plan, None)
            return IngestedFrames(slot.buffer, None, None, tuple(plan), slot, slot.generation)
        caller = torch.cuda.current_stream(self.device)
        stream = stream or self.stream or caller
        slot.reclaim(stream)
        if "device" in plan and stream != caller:
            # Device frames were presumably written on the caller's stream.
            stream.wait_stream(caller)
        with torch.cuda.stream(stream):
            self._copy(slot, frames, plan, stream)
        assert slot.copied is not None
        slot.copied.record(stream)
        return IngestedFrames(slot.buffer, slot.copied, stream, tuple(plan), slot, slot.generation)

    def _plan(self, frame: HostFrame, strategy: str) -> str:
        if isinstance(frame, torch.Tensor) and frame.device.type != "cpu":
            return "device"
        return self.choose(frame) if strategy == "auto" else strategy

    def _copy(
        self, slot: _Slot, frames: Sequence[HostFrame], plan: Sequence[str], stream: torch.cuda.Stream | None
    ) -> None:
        """Queue every frame's copy into ``slot`` on the current stream. Chunk copies go
        to the worker threads first, so they run while this thread copies and queues the
        rest; each chunk's DMA is queued as soon as its rows are staged."""
        completions = _Completions()
        chunked = [i for i, how in enumerate(plan) if how == "chunked"]
        for i in chunked:
            source = _host_array(frames[i])
            for j, (a, b, rows_np, _, _) in enumerate(slot.chunk_views()[i][1:], start=1):
                _copy_workers().submit(rows_np, source[a:b], completions.queue, i * CHUNKS_PER_FRAME + j)
        held: list[np.ndarray] = []
        for i, (frame, how) in enumerate(zip(frames, plan)):
            if isinstance(frame, torch.Tensor) and how == "device":
                slot.buffer[i].copy_(frame, non_blocking=True)
            elif how in ("pinned", "pageable"):
                held += self._copy_direct(slot.buffer[i], _host_array(frame), how, stream)
            elif how == "staging":
                staging, staging_np = slot.staging_views()
                _stage(staging[i], staging_np[i], _host_array(frame))
                slot.buffer[i].copy_(staging[i], non_blocking=True)
                slot.host_in_flight = True
        for i in chunked:
            for j, (a, b, rows_np, rows, device_rows) in enumerate(slot.chunk_views()[i]):
                if j == 0:
                    np.copyto(rows_np, _host_array(frames[i])[a:b])
                else:
                    completions.wait(i * CHUNKS_PER_FRAME + j)
                device_rows.copy_(rows, non_blocking=True)
            slot.host_in_flight = True
        if held:
            slot.held = tuple(held)
            slot.host_in_flight = True

    @staticmethod
    def _copy_direct(
        target: torch.Tensor, array: np.ndarray, how: str, stream: torch.cuda.Stream | None
    ) -> list[np.ndarray]:
        """Copy straight from the frame's memory; returns frames to keep alive until the
        DMA completed (page-locked frames that no pool protects)."""
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)
        target.copy_(host_tensor(array), non_blocking=True)
        if how != "pinned" or stream is None:
            return []
        owner = pinned.pool_of(array)
        if owner is not None:
            owner.record_read(array, stream)
            return []
        return [array]


def _page_locked(array: np.ndarray) -> bool:
    """Whether a C-contiguous ``array`` lives in page-locked memory that a DMA can read.

    Pool frames are known; otherwise CUDA is asked about the pointer
    (``cudaPointerGetAttributes``, via ``Tensor.is_pinned``, about a microsecond).
    Non-contiguous frames need a host copy anyway, and read-only ones are left alone
    because torch.from_numpy warns on them: both count as pageable.
    """
    if not array.flags.c_contiguous or not array.flags.writeable or array.size == 0:
        return False
    owner = pinned.pool_of(array)
    if owner is not None:
        return owner.pinned
    return bool(torch.from_numpy(array).is_pinned())


_defaults = threading.local()


def default_ingest(device: torch.device) -> FrameIngest:
    """This thread's :class:`FrameIngest` for ``device`` (strategy from the environment,
    copies on the current stream); :func:`~inference_triton_preproc.preprocess` uses it.

    Per thread, so that concurrent callers never share a ring slot.
    """
    ingests = getattr(_defaults, "ingests", None)
    if ingests is None:
        ingests = _defaults.ingests = {}
    ingest = ingests.get(device)
    if ingest is None:
        ingest = ingests[device] = FrameIngest(device)
    return ingest
