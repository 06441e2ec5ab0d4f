"""Reusable output tensors for a producer stream whose consumers run on other streams."""

from __future__ import annotations

import logging
import sys
import threading

import torch

logger = logging.getLogger(__name__)

# References to a slot while only the ring holds it: the list entry and
# sys.getrefcount's own argument.
_FREE_REFCOUNT = 2


class OutputRing:
    """Preallocated tensors per (shape, dtype, device), reused once their users let go.

    A buffer is handed out again only when nothing outside the ring references it any
    more, i.e. the caller has dropped the tensor it got (by then its consumer's work
    is queued on the consumer's stream, which the producer must also wait for before
    writing: see the plugin). When every buffer is still held, the ring grows instead
    of overwriting one, so several threads sharing a model never see their input
    change under them. In steady state nothing is allocated, which keeps the hot path
    CUDA-graph friendly.
    """

    def __init__(self, depth: int = 3, warn_above: int = 8) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.depth = depth
        self.warn_above = warn_above
        self._slots: dict[tuple, list[torch.Tensor]] = {}
        self._next: dict[tuple, int] = {}
        self._lock = threading.Lock()

    def acquire(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A buffer of this shape (contiguous, contents undefined) that nobody else holds."""
        key = (tuple(shape), dtype, device)
        with self._lock:
            slots = self._slots.setdefault(key, [])
            if len(slots) >= self.depth:
                start = self._next.get(key, 0)
                for step in range(len(slots)):
                    index = (start + step) % len(slots)
                    if sys.getrefcount(slots[index]) <= _FREE_REFCOUNT:
                        self._next[key] = (index + 1) % len(slots)
                        return slots[index]
            slots.append(torch.empty(shape, dtype=dtype, device=device))
            if len(slots) == self.warn_above + 1:
                logger.warning("%d output buffers of shape %s are held at once; are results being kept?", len(slots), shape)
            return slots[-1]

    def __len__(self) -> int:
        return sum(len(v) for v in self._slots.values())
