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

When the polygons are at hand as int32 arrays (the adapter surface traced them),
:func:`fill_polygons` fills them without reading any per-vertex mapping; the adapter
hands them to the workflows surface through :func:`keep_polygons` /
:func:`kept_polygons`, tied to the response object they were made for. Inside
:func:`polygons_suffice` (the workflows surface opens it around the one block call
whose conversion reads them, the pipeline surface around the model call whose responses
are only dumped) the adapter may keep the polygons *instead of* the response's points;
:func:`vertex_dicts` rebuilds the dumped points of such a polygon
wherever they are still needed.

NumPy and OpenCV (on the package's shared worker pool); nothing here imports a host package.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain
from operator import itemgetter
from typing import Any, NamedTuple

import cv2
import numpy as np

from ..runtime.threads import parallel_map

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


def polygon_slices(vertices: np.ndarray, ends: np.ndarray) -> list[np.ndarray]:
    """The polygons of :func:`polygon_vertices`' ``(vertices, ends)``, as views of ``vertices``."""
    starts = [0, *ends[:-1].tolist()]
    return [vertices[start:end] for start, end in zip(starts, ends.tolist())]


def fill_polygons(polygons: Sequence[np.ndarray], width: int, height: int) -> np.ndarray:
    """Masks of filled int32 polygons, equal to supervision's masks of the same (integer) vertices.

    Args:
        polygons: per detection, an int32 ``(K, 2)`` array of ``(x, y)`` vertices in pixels
            of the ``width x height`` frame, ``K >= 3``; vertices may lie outside the frame
            (OpenCV clips them).
        width: frame width in pixels.
        height: frame height in pixels.

    Returns:
        bool ``(N, height, width)`` C-contiguous array; ``masks[i]`` is polygon ``i``
        filled by ``cv2.fillPoly`` (8-connected edges included).

    Raises:
        ValueError: a polygon is not an int32 ``(K, 2)`` array with ``K >= 3``.
    """
    for i, polygon in enumerate(polygons):
        if not (isinstance(polygon, np.ndarray) and polygon.dtype == np.int32 and polygon.ndim == 2 and polygon.shape[1] == 2):
            raise ValueError(f"polygons: polygon {i} is not an int32 (K, 2) array")
        if polygon.shape[0] < 3:
            raise ValueError(f"polygons: polygon {i} has fewer than 3 vertices")
    masks = np.zeros((len(polygons), int(height), int(width)), dtype=bool)
    # Same storage, one byte per pixel: fillPoly writes 1s into the bool array in place,
    # each polygon into its own slice, so the fills can run side by side (fillPoly releases the GIL).
    parallel_map(_fill, list(zip(masks.view(np.uint8), polygons)))
    return masks


def _fill(job: tuple[np.ndarray, np.ndarray]) -> None:
    canvas, polygon = job
    cv2.fillPoly(canvas, [polygon], color=(1,))


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
        bool ``(N, height, width)`` array, as :func:`fill_polygons`.

    Raises:
        ValueError: a polygon has fewer than 3 vertices, or the vertices are malformed
            (see :func:`polygon_vertices`).
    """
    short = [i for i, p in enumerate(points) if len(p) < 3]
    if short:
        raise ValueError(f"points: polygon {short[0]} has fewer than 3 vertices")
    return fill_polygons(polygon_slices(*polygon_vertices(points)), width=width, height=height)


def vertex_pairs(polygon: np.ndarray) -> Iterator[tuple[float, float]]:
    """The ``(x, y)`` vertices of an int32 ``(K, 2)`` polygon as pairs of Python floats, in order.

    These are the floats pydantic makes of the stock float32 vertices (integers, so exact).
    """
    values = iter(polygon.astype(np.float64).ravel().tolist())
    return zip(values, values)


def vertex_dicts(polygon: np.ndarray) -> list[dict[str, float]]:
    """An int32 ``(K, 2)`` polygon's vertices as ``{"x": x, "y": y}`` dicts of Python floats.

    What a response's ``points`` of these vertices dump to (``model_dump``), and what
    the response's prediction model validates into its ``Point`` objects.
    """
    return [{"x": x, "y": y} for x, y in vertex_pairs(polygon)]


class Kept(NamedTuple):
    """What :func:`keep_polygons` kept for a response."""

    pairs: tuple[tuple[Any, np.ndarray], ...]
    """Per prediction: the object holding its vertices and its int32 ``(K, 2)`` polygon."""
    points_omitted: bool
    """Whether the predictions' ``points`` were left empty (:func:`polygons_suffice`)."""


# id(owner) -> (a weak reference to owner, what was kept for it).
_kept: dict[int, tuple[weakref.ref, Kept]] = {}
_thread = threading.local()


@contextmanager
def polygons_suffice() -> Iterator[None]:
    """While open on this thread, a response whose polygons are kept may leave its ``points`` empty.

    Opened only around a call whose every reader of those responses either fills from
    the kept polygons or rebuilds the points with :func:`vertex_dicts` first.
    """
    previous = getattr(_thread, "suffice", False)
    _thread.suffice = True
    try:
        yield
    finally:
        _thread.suffice = previous


def points_needed() -> bool:
    """False inside :func:`polygons_suffice` on this thread."""
    return not getattr(_thread, "suffice", False)


def keep_polygons(owner: Any, pairs: Sequence[tuple[Any, np.ndarray]], points_omitted: bool = False) -> None:
    """Keep the int32 polygons behind ``owner``'s predictions for as long as ``owner`` lives.

    Args:
        owner: the object the polygons were made for (a response); it must support weak
            references.
        pairs: per prediction of ``owner``, in order: the object holding its vertices (the
            prediction's ``points`` list, identity-checked by the reader) and its polygon as
            an int32 ``(K, 2)`` array of ``K`` vertices: the same vertices as the points,
            or, with ``points_omitted``, the vertices the left-empty points stand for.
        points_omitted: the predictions' ``points`` lists are empty (:func:`polygons_suffice`).
    """
    key = id(owner)
    polygons = tuple((points, np.ascontiguousarray(polygon, dtype=np.int32).reshape(-1, 2)) for points, polygon in pairs)
    # The entry leaves with its owner, before the id can be reused.
    _kept[key] = (weakref.ref(owner, lambda _ref: _kept.pop(key, None)), Kept(polygons, points_omitted))


def kept_polygons(owner: Any) -> Kept | None:
    """What :func:`keep_polygons` kept for this very ``owner``, or None."""
    entry = _kept.get(id(owner))
    if entry is None or entry[0]() is not owner:
        return None
    return entry[1]
