"""A small ring of reusable output tensors for a producer/consumer pair of CUDA streams."""

from __future__ import annotations

import threading

import torch


class OutputRing:
    """``depth`` preallocated tensors per (shape, dtype, device), handed out in turn.

    The caller must make its producing stream wait for whatever still reads a buffer
    before overwriting it. The ring allocates nothing after the first round, which
    keeps the hot path free of allocations and CUDA-graph friendly.
    """

    def __init__(self, depth: int = 3) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.depth = depth
        self._slots: dict[tuple, list[torch.Tensor]] = {}
        self._next: dict[tuple, int] = {}
        self._lock = threading.Lock()

    def acquire(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The next buffer of this shape (contiguous, uninitialised contents)."""
        key = (tuple(shape), dtype, device)
        with self._lock:
            slots = self._slots.setdefault(key, [])
            index = self._next.get(key, 0)
            if index == len(slots) and len(slots) < self.depth:
                slots.append(torch.empty(shape, dtype=dtype, device=device))
            self._next[key] = (index + 1) % self.depth
            return slots[index]

    def __len__(self) -> int:
        return sum(len(v) for v in self._slots.values())
