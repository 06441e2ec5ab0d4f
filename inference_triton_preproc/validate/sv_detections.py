"""Field-by-field equality of two ``sv.Detections``: every array with its dtype and shape, every ``data`` entry.

Used to show that the workflows surface gives the block's stock output: ``xyxy``,
``mask``, ``confidence``, ``class_id``, ``tracker_id``, each ``data`` key and value and
the metadata must be equal; detection and inference ids drawn afresh on each side
(uuid4, one per detection / per request) can only be compared by form.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

# data keys holding uuid4 strings drawn afresh by every run.
FRESH_KEYS = ("detection_id", "inference_id")
FIELDS = ("xyxy", "mask", "confidence", "class_id", "tracker_id")


def _array_difference(a: Any, b: Any, what: str) -> str | None:
    if a is None or b is None:
        return None if a is None and b is None else f"{what}: {type(a).__name__} vs {type(b).__name__}"
    if type(a) is not type(b):
        return f"{what}: {type(a).__name__} vs {type(b).__name__}"
    if not isinstance(a, np.ndarray):
        return None if a == b else f"{what}: {a!r} vs {b!r}"
    if a.dtype != b.dtype or a.shape != b.shape:
        return f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    return None if np.array_equal(a, b) else f"{what}: values differ"


def _uuid_form_difference(a: np.ndarray, b: np.ndarray, what: str) -> str | None:
    if a.dtype.kind != b.dtype.kind or a.shape != b.shape:
        return f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    for value in (*a.tolist(), *b.tolist()):
        try:
            canonical = str(uuid.UUID(value)) == value
        except (TypeError, ValueError, AttributeError):
            canonical = False
        if not canonical:
            return f"{what}: {value!r} is not a uuid"
    return None


def detections_differences(a: Any, b: Any, fresh_ids: bool = False) -> list[str]:
    """What differs between two ``sv.Detections``; empty when they are equal.

    Args:
        a, b: the two ``sv.Detections``.
        fresh_ids: the ``detection_id`` and ``inference_id`` values were drawn afresh on
            each side: compare them by form (same dtype kind and shape, each a
            canonical uuid string).

    Returns:
        One line per differing field, ``data`` or metadata entry.
    """
    if len(a) != len(b):
        return [f"{len(a)} vs {len(b)} detections"]
    found = [_array_difference(getattr(a, name), getattr(b, name), name) for name in FIELDS]
    if set(a.data) != set(b.data):
        found.append(f"data keys {sorted(a.data)} vs {sorted(b.data)}")
    else:
        for key in a.data:
            if key in FRESH_KEYS and fresh_ids:
                found.append(_uuid_form_difference(np.asarray(a.data[key]), np.asarray(b.data[key]), f"data[{key!r}]"))
            else:
                found.append(_array_difference(a.data[key], b.data[key], f"data[{key!r}]"))
    if set(a.metadata) != set(b.metadata):
        found.append(f"metadata keys {sorted(a.metadata)} vs {sorted(b.metadata)}")
    else:
        found.extend(_array_difference(a.metadata[k], b.metadata[k], f"metadata[{k!r}]") for k in a.metadata)
    return [line for line in found if line is not None]
