"""An InferencePipeline video source that decodes straight into page-locked frames.

``InferencePipeline`` accepts, as ``video_reference``, a zero-argument factory that
returns a video frame producer (``grab``/``retrieve``/``release``/``isOpened``/
``discover_source_properties``/``initialize_source_properties``, plus the optional
``connection_error_message`` and ``interrupt``). :func:`pinned_video_source` builds one
that decodes with OpenCV into the frames of a :class:`~.pinned.PinnedFramePool`, so
every frame reaches the GPU with one DMA and no host copy::

    pipeline = InferencePipeline.init(video_reference=pinned_video_source("clip.mp4"), ...)

OpenCV's ``retrieve`` copies each decoded frame once into the array it returns anyway;
given a pool array as the output, that copy lands in page-locked memory.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from .pinned import PinnedFramePool, PoolClosedError, PoolExhaustedError

if TYPE_CHECKING:
    from streamvision.camera.entities import SourceProperties

logger = logging.getLogger(__name__)

DEFAULT_POOL_CAPACITY = 8
DEFAULT_ACQUIRE_TIMEOUT_S = 5.0

VideoSource = str | int | os.PathLike


class PinnedVideoFrameProducer:
    """OpenCV decoding into pooled page-locked frames; the video frame producer protocol
    of ``InferencePipeline`` (streamvision).

    Frames are ``(H, W, 3)`` uint8 BGR numpy arrays, exactly what ``cv2.VideoCapture``
    returns, but backed by a :class:`PinnedFramePool` built on the first frame. A frame's
    buffer is reused once the pipeline (and everyone else) dropped it and the GPU
    finished reading it.

    When all ``max_pool_capacity`` frames are held, decoding waits for one to be released
    (back-pressure, as the pipeline's own bounded buffer does for files) for up to
    ``acquire_timeout`` seconds. If none comes back, a consumer is keeping frames: the
    producer then decodes into ordinary memory (logged once) without waiting, until a
    pool frame is free again, so such a consumer loses the fast path but never stalls
    the stream for more than one timeout.

    Args:
        source: video file path, stream URL or camera index (anything ``cv2.VideoCapture`` opens).
        pool_capacity: page-locked frames allocated up front (>= 2).
        max_pool_capacity: bound on the pool's growth; default ``pool_capacity`` (no
            growth: a decoder outrunning its consumer waits instead).
        acquire_timeout: seconds to wait for a free frame before decoding into ordinary memory.
    """

    def __init__(
        self,
        source: VideoSource,
        *,
        pool_capacity: int = DEFAULT_POOL_CAPACITY,
        max_pool_capacity: int | None = None,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT_S,
    ) -> None:
        import cv2

        self._source = os.fspath(source) if isinstance(source, os.PathLike) else source
        self._pool_capacity = pool_capacity
        self._max_pool_capacity = max_pool_capacity
        self._acquire_timeout = acquire_timeout
        self._pool: PinnedFramePool | None = None
        self._pooling = True
        self._interrupted = threading.Event()
        self._fallback_logged = False
        self._starved = False
        self._capture = cv2.VideoCapture(self._source)

    @property
    def pool(self) -> PinnedFramePool | None:
        """The frame pool (None until the first frame is retrieved)."""
        return self._pool

    def isOpened(self) -> bool:
        return bool(self._capture.isOpened())

    def connection_error_message(self) -> str:
        return "" if self.isOpened() else f"OpenCV could not open video source {self._source!r}"

    def grab(self) -> bool:
        """Advance to the next frame without decoding it (the pipeline skips frames this way)."""
        if self._interrupted.is_set():
            return False
        return bool(self._capture.grab())

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        """Decode the grabbed frame into a pool frame: ``(True, frame)``, or ``(False, None)``."""
        if self._interrupted.is_set():
            return False, None
        target = self._acquire()
        if self._interrupted.is_set():  # interrupted while waiting for a free frame
            return False, None
        if target is None:
            ok, frame = self._capture.retrieve()
        else:
            ok, frame = self._capture.retrieve(image=target)
        if not ok or frame is None:
            return False, None
        if self._pooling and (self._pool is None or frame.shape != self._pool.shape):
            # No pool yet (the source did not declare its size) or OpenCV allocated its
            # own array because the size changed: this frame stays in ordinary memory,
            # the next ones go to a pool of its size.
            if frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8:
                self._replace_pool(frame.shape)
            else:
                logger.info("%r decodes %s %s frames; they are not pooled", self._source, frame.shape, frame.dtype)
                self._pooling = False
        return True, frame

    def _acquire(self) -> np.ndarray | None:
        """A pool frame to decode into, or None to let OpenCV allocate."""
        pool = self._pool
        if not self._pooling:
            return None
        if pool is None:
            shape = self._declared_shape()
            if shape is None:
                return None
            pool = self._replace_pool(shape)
        try:
            frame = pool.acquire(0.0 if self._starved else self._acquire_timeout)
        except PoolExhaustedError:
            if not self._fallback_logged:
                self._fallback_logged = True
                logger.warning(
                    "all %d pooled frames of %r stayed in use for %g s; decoding into ordinary memory while "
                    "they are held (drop frames sooner, or raise max_pool_capacity)",
                    pool.capacity,
                    self._source,
                    self._acquire_timeout,
                )
            self._starved = True
            return None
        except PoolClosedError:
            return None
        self._starved = False
        return frame

    def _declared_shape(self) -> tuple[int, int, int] | None:
        import cv2

        width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        return (height, width, 3) if width > 0 and height > 0 else None

    def _replace_pool(self, shape: tuple[int, ...]) -> PinnedFramePool:
        if self._pool is not None:
            self._pool.close()
        self._pool = PinnedFramePool(
            (int(shape[0]), int(shape[1]), 3),
            self._pool_capacity,
            max_capacity=self._max_pool_capacity or self._pool_capacity,
            timeout=self._acquire_timeout,
        )
        return self._pool

    def initialize_source_properties(self, properties: dict[str, float | str]) -> None:
        """Apply ``video_source_properties`` of the pipeline (resolution, fps, ...) to the capture."""
        from streamvision.camera.capture_properties import apply_capture_properties

        apply_capture_properties(self._capture, properties=properties)

    def discover_source_properties(self) -> SourceProperties:
        """Size, fps and frame count as OpenCV reports them; files get a creation time
        (modification time minus duration) so frame timestamps follow the video."""
        import cv2
        from streamvision.camera.entities import SourceProperties

        fps = float(self._capture.get(cv2.CAP_PROP_FPS))
        total_frames = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        is_file = total_frames > 0 and isinstance(self._source, str) and os.path.exists(self._source)
        created = None
        if is_file and fps > 0:
            created = datetime.fromtimestamp(os.path.getmtime(self._source)) - timedelta(seconds=total_frames / fps)
        return SourceProperties(
            width=int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            total_frames=total_frames,
            is_file=is_file,
            fps=fps,
            timestamp_created=created,
        )

    def interrupt(self) -> None:
        """Stop decoding from another thread: wakes a ``retrieve`` waiting for a free frame."""
        self._interrupted.set()
        if self._pool is not None:
            self._pool.close()

    def release(self) -> None:
        """Close the capture and the pool (frames still held stay valid)."""
        self._capture.release()
        if self._pool is not None:
            self._pool.close()


def pinned_video_source(
    source: VideoSource,
    pool_capacity: int = DEFAULT_POOL_CAPACITY,
    *,
    max_pool_capacity: int | None = None,
    acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT_S,
) -> Callable[[], PinnedVideoFrameProducer]:
    """A ``video_reference`` for ``InferencePipeline`` that decodes into page-locked frames.

    The pipeline calls the factory at every (re)start of the source; each call opens the
    source anew with its own pool. See :class:`PinnedVideoFrameProducer` for the arguments.
    """
    if pool_capacity < 2:
        raise ValueError(f"pool_capacity must be >= 2, got {pool_capacity}")
    return functools.partial(
        PinnedVideoFrameProducer,
        source,
        pool_capacity=pool_capacity,
        max_pool_capacity=max_pool_capacity,
        acquire_timeout=acquire_timeout,
    )

