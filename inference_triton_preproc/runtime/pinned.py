"""A pool of page-locked frame buffers that decoders write into and the GPU reads by DMA.

A frame that already lives in page-locked ("pinned") host memory reaches the GPU with
one asynchronous DMA; a frame in ordinary (pageable) memory has to cross host memory
once more first, which costs more than the transfer itself. Decoders already copy every
frame once into the array they return, so handing them a pool array as the output makes
that existing copy land where the DMA can read it, at no extra cost.

:class:`PinnedFramePool` hands out ordinary ``numpy`` uint8 arrays and takes each
buffer back by itself when the last reference to the array (or to any view of it) is
dropped, and when the GPU has finished reading it.
"""

from __future__ import annotations

import bisect
import inspect
import logging
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 4
DEFAULT_TIMEOUT_S = 10.0

# torch 2.8 added "external" events: recorded during a CUDA-graph capture, such an event
# becomes a record node of the graph, so every replay marks the buffer as read without
# a host call of its own (one CUDA call from Python costs tens of microseconds of CPU on
# some hosts). With older torch the caller records the event after each replay.
GRAPHS_RECORD_READS = "external" in inspect.signature(torch.cuda.Event.__new__).parameters


class PoolExhaustedError(TimeoutError):
    """Every buffer of a :class:`PinnedFramePool` stayed in use for the whole timeout."""


class PoolClosedError(RuntimeError):
    """:meth:`PinnedFramePool.acquire` was called on (or woken by) a closed pool."""


class _Buffer:
    """One page-locked HWC uint8 buffer and what still uses it."""

    __slots__ = ("end", "leased", "reads", "start", "tensor")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor
        self.start = tensor.data_ptr()
        self.end = self.start + tensor.numel()
        self.leased = False
        # Device index -> event recorded after the last GPU read of this buffer. One
        # event per device because a CUDA event can only be recorded on its own device.
        self.reads: dict[int, torch.cuda.Event] = {}

    def gpu_idle(self) -> bool:
        return all(event.query() for event in self.reads.values())

    def wait_gpu(self) -> None:
        for event in self.reads.values():
            event.synchronize()


class _AddressIndex:
    """Which pool buffer, if any, holds a host address (buffers sorted by start address)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: list[int] = []
        self._entries: list[tuple[_Buffer, weakref.ref[PinnedFramePool]]] = []

    def __bool__(self) -> bool:
        """Whether any pool buffer is registered (a cheap test before a lookup)."""
        return bool(self._starts)

    def add(self, buffer: _Buffer, pool: PinnedFramePool) -> None:
        with self._lock:
            i = bisect.bisect_left(self._starts, buffer.start)
            self._starts.insert(i, buffer.start)
            self._entries.insert(i, (buffer, weakref.ref(pool)))

    def remove(self, buffers: Sequence[_Buffer]) -> None:
        with self._lock:
            doomed = {id(b) for b in buffers}
            keep = [i for i, (b, _) in enumerate(self._entries) if id(b) not in doomed]
            self._starts = [self._starts[i] for i in keep]
            self._entries = [self._entries[i] for i in keep]

    def find(self, address: int) -> tuple[PinnedFramePool, _Buffer] | None:
        with self._lock:
            i = bisect.bisect_right(self._starts, address) - 1
            if i < 0:
                return None
            buffer, pool_ref = self._entries[i]
        pool = pool_ref()
        if pool is None or address >= buffer.end:
            return None
        return pool, buffer


_INDEX = _AddressIndex()
_fallback_logged = False


def _address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def _find(array: np.ndarray) -> tuple[PinnedFramePool, _Buffer] | None:
    if not isinstance(array, np.ndarray) or array.size == 0:
        return None
    return _INDEX.find(_address(array))


def any_pool_frames() -> bool:
    """Whether some pool's buffers exist (else no array can be a pool frame)."""
    return bool(_INDEX)


def pool_of(array: np.ndarray) -> PinnedFramePool | None:
    """The open pool whose buffer holds ``array``'s first element (any view of a pool frame), else None."""
    found = _find(array)
    return found[0] if found is not None else None


def _allocate(shape: tuple[int, int, int]) -> tuple[torch.Tensor, bool]:
    """A uint8 host tensor of ``shape``: page-locked when CUDA can provide it."""
    global _fallback_logged
    if torch.cuda.is_available():
        try:
            return torch.empty(shape, dtype=torch.uint8, pin_memory=True), True
        except RuntimeError as error:
            reason = f"page-locked allocation failed ({error})"
    else:
        reason = "CUDA is not available"
    if not _fallback_logged:
        _fallback_logged = True
        logger.info("PinnedFramePool: %s; frames use ordinary memory (correct, without the DMA fast path)", reason)
    return torch.empty(shape, dtype=torch.uint8), False


class PinnedFramePool:
    """Recycled page-locked uint8 frames of one shape, handed out as numpy arrays.

    ``acquire()`` returns a C-contiguous ``numpy.uint8`` array of ``shape`` whose memory
    is page-locked (when CUDA is available; otherwise ordinary memory, logged once). The
    array is an ordinary numpy array: slice it, pass it to OpenCV as an output, keep
    views of it. Its buffer goes back to the pool when

    * the array and every view of it have been garbage-collected (a weakref finalizer on
      the handed-out array; numpy views keep their base array alive), and
    * the GPU has finished every copy that :mod:`~inference_triton_preproc.runtime.ingest`
      issued from it (ingest records a CUDA event after each copy via
      :meth:`record_read`; a buffer is handed out again only once that event completed).

    Exhaustion: when every buffer is in use, the pool grows by one buffer at a time up
    to ``max_capacity`` (the first growth logs a warning: frames are held longer than
    the pool was sized for); beyond that :meth:`acquire` blocks until a frame is released
    and raises :class:`PoolExhaustedError` after ``timeout`` seconds. Growth keeps a
    consumer that briefly holds a few more frames from stalling; the bound keeps one
    that never releases frames from taking all page-locked memory.

    Thread-safe: any thread may acquire, and frames may be dropped in any thread.

    Args:
        shape: (height, width, channels) of every frame, in pixels.
        capacity: buffers allocated up front (at least 2: one being filled while the
            previous one is read).
        max_capacity: bound on growth; default ``4 * capacity``.
        timeout: default seconds :meth:`acquire` waits once the pool is at
            ``max_capacity``; ``math.inf`` waits forever.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        capacity: int = DEFAULT_CAPACITY,
        *,
        max_capacity: int | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if len(shape) != 3 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in shape):
            raise ValueError(f"shape must be (height, width, channels) of positive ints, got {shape!r}")
        if not isinstance(capacity, int) or capacity < 2:
            raise ValueError(f"capacity must be an int >= 2, got {capacity!r}")
        max_capacity = 4 * capacity if max_capacity is None else max_capacity
        if not isinstance(max_capacity, int) or max_capacity < capacity:
            raise ValueError(f"max_capacity must be an int >= capacity ({capacity}), got {max_capacity!r}")
        if not timeout >= 0:
            raise ValueError(f"timeout must be >= 0 seconds (math.inf to wait forever), got {timeout!r}")
        self.shape: tuple[int, int, int] = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.max_capacity = max_capacity
        self.timeout = float(timeout)
        self.pinned = True
        self._cond = threading.Condition(threading.RLock())
        self._buffers: list[_Buffer] = []
        self._free: deque[_Buffer] = deque()
        self._closed = False
        self._grew = False
        # Unregister the buffers when the pool is collected; the list is shared, so
        # buffers added by growth are covered too.
        self._finalizer = weakref.finalize(self, _INDEX.remove, self._buffers)
        for _ in range(capacity):
            self._free.append(self._grow())

    @property
    def capacity(self) -> int:
        """Buffers allocated so far (grows up to ``max_capacity``)."""
        return len(self._buffers)

    @property
    def in_use(self) -> int:
        """Buffers currently handed out (a frame or a view of it is alive)."""
        with self._cond:
            return sum(b.leased for b in self._buffers)

    def _grow(self) -> _Buffer:
        tensor, pinned = _allocate(self.shape)
        self.pinned = self.pinned and pinned
        buffer = _Buffer(tensor)
        self._buffers.append(buffer)
        _INDEX.add(buffer, self)
        return buffer

    def _take_free(self) -> tuple[_Buffer | None, bool]:
        """A free buffer (oldest first) and whether the GPU may still be reading it."""
        for buffer in list(self._free):
            if buffer.gpu_idle():
                self._free.remove(buffer)
                return buffer, False
        if self._free:
            return self._free.popleft(), True
        return None, False

    def acquire(self, timeout: float | None = None) -> np.ndarray:
        """A free frame: C-contiguous uint8 numpy array of ``shape``, contents undefined.

        Args:
            timeout: seconds to wait when the pool is at ``max_capacity`` and every
                buffer is in use; None uses the pool's ``timeout``.

        Raises:
            PoolExhaustedError: no buffer was released within the timeout.
            PoolClosedError: the pool is (or was, while waiting) closed.
        """
        wait = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                if self._closed:
                    raise PoolClosedError("the frame pool is closed")
                buffer, gpu_busy = self._take_free()
                if buffer is not None:
                    break
                if len(self._buffers) < self.max_capacity:
                    buffer, gpu_busy = self._grow(), False
                    # Once per pool: a steady state never grows, so the first growth is the news.
                    log = logger.debug if self._grew else logger.warning
                    self._grew = True
                    log(
                        "PinnedFramePool %dx%d: all %d frames are held; growing to %d (at most %d). "
                        "Frames are kept longer than the pool was sized for: raise its capacity.",
                        self.shape[1],
                        self.shape[0],
                        len(self._buffers) - 1,
                        len(self._buffers),
                        self.max_capacity,
                    )
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PoolExhaustedError(
                        f"all {len(self._buffers)} frames of the pool stayed in use for {wait:g} s; "
                        "release frames (drop every reference and view) or raise max_capacity"
                    )
                self._cond.wait(None if math.isinf(remaining) else remaining)
            buffer.leased = True
        if gpu_busy:
            # Only when every free buffer is still being read: the copy in flight takes
            # about a tenth of a millisecond, so waiting beats growing.
            buffer.wait_gpu()
        array = buffer.tensor.numpy()
        finalizer = weakref.finalize(array, self._release, buffer)
        finalizer.atexit = False
        return array

    def _release(self, buffer: _Buffer) -> None:
        with self._cond:
            buffer.leased = False
            if self._closed:
                self._forget(buffer)
            else:
                self._free.append(buffer)
                self._cond.notify()

    def _forget(self, buffer: _Buffer) -> None:
        self._buffers.remove(buffer)
        _INDEX.remove([buffer])

    def host_tensor(self, array: np.ndarray) -> torch.Tensor:
        """A uint8 tensor over the same page-locked bytes as the C-contiguous ``array``.

        It refers to the pool's own buffer, not to ``array``: holding it (a captured
        CUDA graph does) does not keep the frame leased.

        Raises:
            ValueError: ``array`` is not a C-contiguous frame of this pool.
        """
        found = _find(array)
        if found is None or found[0] is not self or not array.flags.c_contiguous:
            raise ValueError("array is not a C-contiguous frame of this pool")
        buffer = found[1]
        offset = _address(array) - buffer.start
        return buffer.tensor.view(-1)[offset : offset + array.nbytes].view(array.shape)

    def record_read(self, array: np.ndarray, stream: torch.cuda.Stream) -> None:
        """Note that work just queued on ``stream`` reads ``array``'s buffer.

        The buffer is not handed out again before that work has completed. Ingest calls
        this after queuing each copy from a pool frame.

        Raises:
            ValueError: ``array`` does not lie in a buffer of this pool.
        """
        found = _find(array)
        if found is None or found[0] is not self:
            raise ValueError("array is not a frame of this pool")
        self._record_read(found[1], stream)

    def read_event(self, array: np.ndarray, device_index: int) -> torch.cuda.Event:
        """The event that marks the last read of ``array``'s buffer on one device:
        recording it on a stream after work that reads the buffer is :meth:`record_read`.
        For a hot path that reads the same buffer again and again (a captured CUDA graph
        does). Where :data:`GRAPHS_RECORD_READS`, recording it during a graph capture
        puts the record into the graph.

        Raises:
            ValueError: ``array`` does not lie in a buffer of this pool.
        """
        found = _find(array)
        if found is None or found[0] is not self:
            raise ValueError("array is not a frame of this pool")
        return self._read_event(found[1], device_index)

    def _read_event(self, buffer: _Buffer, device_index: int) -> torch.cuda.Event:
        with self._cond:
            event = buffer.reads.get(device_index)
            if event is None:
                event = torch.cuda.Event(external=True) if GRAPHS_RECORD_READS else torch.cuda.Event()
                buffer.reads[device_index] = event
            return event

    def _record_read(self, buffer: _Buffer, stream: torch.cuda.Stream) -> None:
        self._read_event(buffer, stream.device_index).record(stream)

    def close(self) -> None:
        """Stop handing out frames and wake waiting :meth:`acquire` calls (they raise).

        Frames still in use stay valid; their buffers are dropped when released.
        """
        with self._cond:
            self._closed = True
            for buffer in self._free:
                self._forget(buffer)
            self._free.clear()
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return (
            f"PinnedFramePool(shape={self.shape}, capacity={self.capacity}, max_capacity={self.max_capacity}, "
            f"in_use={self.in_use}, pinned={self.pinned}, closed={self._closed})"
        )
