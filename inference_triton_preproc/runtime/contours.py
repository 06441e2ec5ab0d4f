"""Largest outer contours of boolean masks, traced on their foreground crops.

inference's ``masks2poly`` copies full-frame masks to the host and runs
``cv2.findContours(mask, RETR_EXTERNAL, CHAIN_APPROX_SIMPLE)`` on every full frame,
keeping the contour with the most points (the first on ties). Tracing the bounding crop
of a mask's foreground with ``offset=(x0, y0)`` gives the same contours, point for point
and in the same order: OpenCV pads its input with a zero border before tracing, so the
zero pixels a crop leaves out change nothing, and the raster order of the remaining
pixels is the same. Here the crops are cut on the masks' device and reach the host in
one transfer (page-locked on CUDA), so only foreground bounding boxes cross the bus.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from .threads import parallel_map

__all__ = ["foreground_boxes", "largest_contour", "largest_contours", "to_host"]

_scratch = threading.local()


def _pinned(name: str, nbytes: int) -> torch.Tensor:
    """A thread-local page-locked uint8 buffer of at least ``nbytes`` bytes, reused across calls.

    Grown to the next power of two so a stream of varying sizes settles quickly. A
    caller must be done with a view of it before asking for the same ``name`` again
    on the same thread.
    """
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    buffer = buffers.get(name)
    if buffer is None or buffer.numel() < nbytes:
        buffer = torch.empty(1 << max(nbytes - 1, 1).bit_length(), dtype=torch.uint8, pin_memory=True)
        buffers[name] = buffer
    return buffer[:nbytes]


def to_host(tensor: torch.Tensor, name: str = "small") -> np.ndarray:
    """``tensor`` as a host numpy array, through a reused page-locked buffer on CUDA (one sync).

    The result of a CUDA tensor is a view of that buffer: valid until the next call
    with the same ``name`` on this thread. CPU tensors come back as ``tensor.numpy()``.
    """
    if tensor.device.type != "cuda":
        return tensor.numpy()
    tensor = tensor.contiguous()
    nbytes = tensor.numel() * tensor.element_size()
    host = _pinned(name, nbytes).view(tensor.dtype).view(tensor.shape)
    host.copy_(tensor, non_blocking=True)
    torch.cuda.current_stream(tensor.device).synchronize()
    return host.numpy()


def foreground_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Inclusive bounding boxes of each mask's foreground, on the masks' device.

    Args:
        masks: ``(N, H, W)`` bool.

    Returns:
        ``(N, 4)`` int32 ``[x0, y0, x1, y1]``, inclusive pixel indices; an empty mask
        gives ``x1 < x0`` (``x0 = W, x1 = -1``, likewise in y).
    """
    n, height, width = masks.shape
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    boxes = []
    for occupied, size in ((cols, width), (rows, height)):
        index = torch.arange(size, device=masks.device, dtype=torch.int32).expand(n, size)
        first = torch.where(occupied, index, size).amin(dim=1)
        last = torch.where(occupied, index, -1).amax(dim=1)
        boxes.append((first, last))
    (x0, x1), (y0, y1) = boxes
    return torch.stack([x0, y0, x1, y1], dim=1).to(torch.int32)


def _crops(masks: torch.Tensor, boxes: np.ndarray, indices: list[int], pack: bool | None = None) -> list[np.ndarray | None]:
    """The foreground crop of masks ``indices`` as host uint8 views (None for an empty mask).

    CPU masks are sliced in place; CUDA masks (or any, with ``pack``) are packed into one
    device buffer and copied to the host in one page-locked transfer.
    """
    spans = [(int(x0), int(y0), int(x1) + 1, int(y1) + 1) for x0, y0, x1, y1 in boxes[indices].tolist()]
    if not (masks.device.type == "cuda" if pack is None else pack):
        host = masks.numpy().view(np.uint8)
        return [host[i, y0:y1, x0:x1] if x1 > x0 else None for i, (x0, y0, x1, y1) in zip(indices, spans)]
    pieces = [masks[i, y0:y1, x0:x1].reshape(-1) for i, (x0, y0, x1, y1) in zip(indices, spans) if x1 > x0]
    if not pieces:
        return [None] * len(spans)
    packed = to_host(torch.cat(pieces).view(torch.uint8), name="crops")
    crops: list[np.ndarray | None] = []
    start = 0
    for x0, y0, x1, y1 in spans:
        if x1 <= x0:
            crops.append(None)
            continue
        size = (y1 - y0) * (x1 - x0)
        crops.append(packed[start : start + size].reshape(y1 - y0, x1 - x0))
        start += size
    return crops


def largest_contour(crop: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """The outer contour with the most points (the first on ties) of a mask crop, in frame coordinates.

    Args:
        crop: ``(h, w)`` uint8, non-zero = foreground, rows may be strided.
        x0, y0: the crop's top-left corner in the frame.

    Returns:
        ``(K, 2)`` int32 ``(x, y)`` points; ``(0, 2)`` when the crop has no foreground.
    """
    contours = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0))[0]
    if not contours:
        return np.zeros((0, 2), dtype=np.int32)
    return max(contours, key=len).reshape(-1, 2)


def _trace(job: tuple[np.ndarray | None, int, int]) -> np.ndarray:
    crop, x0, y0 = job
    return np.zeros((0, 2), dtype=np.int32) if crop is None else largest_contour(crop, x0, y0)


def largest_contours(
    masks: torch.Tensor, boxes: np.ndarray | None = None, indices: Sequence[int] | None = None
) -> list[np.ndarray]:
    """:func:`largest_contour` of each mask; the same points ``masks2poly`` gives, as int32.

    Args:
        masks: ``(N, H, W)`` bool, on any device.
        boxes: their ``(N, 4)`` :func:`foreground_boxes` on the host, when already fetched.
        indices: which masks (default all), in the order of the result.

    Returns:
        One ``(K, 2)`` int32 array per mask asked for (``(0, 2)`` for an empty mask).
    """
    if boxes is None:
        boxes = to_host(foreground_boxes(masks)).copy()
    indices = list(range(masks.shape[0])) if indices is None else list(indices)
    jobs = [(crop, int(x0), int(y0)) for crop, (x0, y0, _, _) in zip(_crops(masks, boxes, indices), boxes[indices].tolist())]
    # findContours releases the GIL: independent crops are traced side by side.
    return parallel_map(_trace, jobs)
