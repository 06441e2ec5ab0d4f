"""Keeping the loaded heap out of Python's full garbage collections (``RFDETR_TRITON_GC_FREEZE``).

Every frame of a polygon pipeline makes tens of thousands of objects that live for a
frame or more (the ``Point`` objects of its responses), so CPython's collector keeps
promoting them to its oldest generation, and about every few frames a full collection
walks every tracked object of the process: the imported packages, the model, the
pipeline, often close to a million objects. On a 1080p stream that is a pause of
hundreds of milliseconds every few frames.

:func:`freeze_loaded_heap` collects once and then moves everything alive into the
collector's permanent generation (:func:`gc.freeze`), after the first frame, when the
model is loaded and warm. Later collections only walk what was made after that. The
cost, and the reason this is opt-in: a reference cycle among the frozen objects that
becomes garbage later is never reclaimed (objects freed by their reference count still
are). A process that loads one model and streams is what this is for; a server that
loads and unloads many models may keep the cyclic parts of the first one.
"""

from __future__ import annotations

import gc
import logging
import threading

__all__ = ["freeze_loaded_heap"]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_frozen = False


def freeze_loaded_heap() -> int | None:
    """Once per process: a full collection, then :func:`gc.freeze` of everything alive.

    Returns:
        The number of objects in the permanent generation after this call, or None when
        an earlier call already froze (nothing is done then).
    """
    global _frozen
    if _frozen:  # the per-call path: no lock once done
        return None
    with _lock:
        if _frozen:
            return None
        gc.collect()
        gc.freeze()
        _frozen = True
        count = gc.get_freeze_count()
    logger.info("RFDETR_TRITON_GC_FREEZE: %d loaded objects moved out of the garbage collector's full collections", count)
    return count
