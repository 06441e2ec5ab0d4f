"""One shared worker pool for the host work that OpenCV does without the interpreter lock.

``cv2.findContours`` and ``cv2.fillPoly`` release the GIL, so independent masks can be
traced or filled side by side on a host with spare cores.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["MIN_CORES", "PARALLEL_FROM", "parallel_map"]

T = TypeVar("T")
R = TypeVar("R")

# Fewer jobs than this, or fewer cores, run inline: handing them to the pool costs more
# than it saves (on a 2-core host the pool made the workflow masks slower, not faster).
PARALLEL_FROM = 4
MIN_CORES = 4

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="itp-host")
        return _pool


def parallel_map(fn: Callable[[T], R], jobs: Sequence[T]) -> list[R]:
    """``[fn(job) for job in jobs]``, in order; on the shared pool when there are enough jobs and cores.

    ``fn`` must be safe to run on several threads at once (each job touching its own data).
    """
    if len(jobs) < PARALLEL_FROM or (os.cpu_count() or 1) < MIN_CORES:
        return [fn(job) for job in jobs]
    return list(_executor().map(fn, jobs))
