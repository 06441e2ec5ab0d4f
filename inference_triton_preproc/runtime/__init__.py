"""Getting frames onto the GPU fast: ingest strategies, a page-locked frame pool, and an
InferencePipeline video source that decodes straight into it.

* :class:`FrameIngest` / :func:`default_ingest`: host frames -> NHWC uint8 device tensor,
  asynchronously, with the strategy picked per frame (``RFDETR_TRITON_PREPROC_INGEST``
  overrides it). :func:`inference_triton_preproc.preprocess` uploads through it.
* :class:`PinnedFramePool`: recycled numpy frames in page-locked memory.
* :func:`pinned_video_source`: ``InferencePipeline.init(video_reference=pinned_video_source(path), ...)``.
"""

from __future__ import annotations

from .ingest import (
    CHUNKED_MIN_BYTES,
    INGEST_CHOICES,
    INGEST_ENV,
    STRATEGIES,
    FrameIngest,
    IngestedFrames,
    IngestStrategy,
    auto_strategy,
    default_ingest,
    ingest_strategy_from_env,
    parse_ingest_strategy,
)
from .pinned import PinnedFramePool, PoolClosedError, PoolExhaustedError, pool_of
from .producer import PinnedVideoFrameProducer, pinned_video_source

__all__ = [
    "CHUNKED_MIN_BYTES",
    "INGEST_CHOICES",
    "INGEST_ENV",
    "STRATEGIES",
    "FrameIngest",
    "IngestStrategy",
    "IngestedFrames",
    "PinnedFramePool",
    "PinnedVideoFrameProducer",
    "PoolClosedError",
    "PoolExhaustedError",
    "auto_strategy",
    "default_ingest",
    "ingest_strategy_from_env",
    "parse_ingest_strategy",
    "pinned_video_source",
    "pool_of",
]
