"""Polygon predictions filled into masks, the way supervision's ``Detections.from_inference`` fills them.

supervision (0.25-0.30) turns each instance-segmentation prediction's ``points`` into a
mask by: one float64 ``(K, 2)`` array of its ``x``/``y`` values (an error when a vertex
is not finite), ``np.round`` (half to even), a cast to int32, ``cv2.fillPoly`` with
colour 1 on a zeroed uint8 ``(H, W)`` canvas, a cast to bool, and finally one
``np.array`` stacking every mask. :func:`fill_polygon_masks` gives the same array
with the same OpenCV call on the same canvas, but builds the vertex array once per
frame instead of once per polygon from a list of pairs, and fills each polygon
straight into its slice of one zeroed ``(N, H, W)`` bool array (viewed as uint8):
no per-detection canvas, no cast and no stacking copy of ``N x H x W`` bytes.

Standard library, NumPy and OpenCV only; nothing here imports a host package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import cv2
import numpy as np

_X = itemgetter("x")
_Y = itemgetter("y")


class NonFiniteVertex(ValueError):
    """A polygon vertex is NaN or infinite (supervision raises its own ValueError on it)."""


def polygon_vertices(points: Sequence[Sequence[Mapping[str, Any]]]) -> tuple[np.ndarray, np.ndarray]:
    """All polygons' vertices, rounded like supervision rounds them, in one array.

    Args:
        points: per polygon, its vertices as mappings with ``"x"`` and ``"y"`` (pixels).

    Returns:
        ``(vertices, ends)``: int32 ``(sum K_i, 2)`` rounded ``(x, y)`` vertices of every
        polygon in order, and int64 ``(N,)`` end offsets (polygon ``i`` is
        ``vertices[ends[i-1]:ends[i]]``).

    Raises:
        NonFiniteVertex: a vertex is NaN or infinite.
        KeyError, TypeError, ValueError: a vertex is not an ``x``/``y`` mapping of numbers.
    """
    ends = np.cumsum([len(p) for p in points], dtype=np.int64)
    total = int(ends[-1]) if len(ends) else 0
    vertices = np.empty((total, 2), dtype=np.float64)
    # One C-level pass per coordinate (no per-vertex tuple): the fastest of the forms measured.
    vertices[:, 0] = np.fromiter(map(_X, chain.from_iterable(points)), dtype=np.float64, count=total)
    vertices[:, 1] = np.fromiter(map(_Y, chain.from_iterable(points)), dtype=np.float64, count=total)
    if not np.isfinite(vertices).all():
        raise NonFiniteVertex("a polygon vertex is not a finite number")
    # Element-wise, so rounding the whole frame at once equals rounding each polygon.
    return np.round(vertices).astype(np.int32), ends


def fill_polygon_masks(points: Sequence[Sequence[Mapping[str, Any]]], width: int, height: int) -> np.ndarray:
    """Masks of filled polygons, equal to the ``mask`` supervision's ``from_inference`` builds from them.

    Every polygon must have at least 3 vertices (supervision keeps shorter ones as
    box-only detections and then drops every mask of the frame; the caller decides
    that case before calling).

    Args:
        points: per detection, its polygon's vertices as mappings with ``"x"`` and
            ``"y"`` in pixels of the ``width x height`` frame; vertices may lie
            outside the frame (OpenCV clips them).
        width: frame width in pixels.
        height: frame height in pixels.

    Returns:
        bool ``(N, height, width)`` C-contiguous array; ``masks[i]`` is polygon ``i``
        filled by ``cv2.fillPoly`` (8-connected edges included).

    Raises:
        ValueError: a polygon has fewer than 3 vertices, or the vertices are malformed
            (see :func:`polygon_vertices`).
    """
    short = [i for i, p in enumerate(points) if len(p) < 3]
    if short:
        raise ValueError(f"points: polygon {short[0]} has fewer than 3 vertices")
    vertices, ends = polygon_vertices(points)
    masks = np.zeros((len(points), int(height), int(width)), dtype=bool)
    # Same storage, one byte per pixel: fillPoly writes 1s into the bool array in place.
    canvases = masks.view(np.uint8)
    start = 0
    for i, end in enumerate(ends.tolist()):
        cv2.fillPoly(canvases[i], [vertices[start:end]], color=(1,))
        start = end
    return masks
