"""Field-by-field equality of two ``sv.Detections``, as the workflows surface promises it."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

DETECTION_ID = "detection_id"
FIELDS = ("xyxy", "mask", "confidence", "class_id", "tracker_id")


def _assert_arrays_equal(a: Any, b: Any, what: str) -> None:
    if a is None or b is None:
        assert a is None and b is None, f"{what}: {type(a).__name__} vs {type(b).__name__}"
        return
    assert type(a) is type(b), f"{what}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} vs {b.dtype}"
        assert a.shape == b.shape, f"{what}: shape {a.shape} vs {b.shape}"
        assert np.array_equal(a, b), f"{what}: values differ"
    else:
        assert a == b, f"{what}: {a!r} vs {b!r}"


def _assert_uuid_form(a: np.ndarray, b: np.ndarray) -> None:
    form = f"{DETECTION_ID}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    assert a.dtype.kind == b.dtype.kind and a.shape == b.shape, form
    for value in (*a.tolist(), *b.tolist()):
        assert str(uuid.UUID(value)) == value, f"{DETECTION_ID}: {value!r} is not a uuid"


def assert_detections_equal(a: Any, b: Any, fresh_ids: bool = False) -> None:
    """Every field, every ``data`` entry and the metadata of ``a`` and ``b`` are equal (dtypes and shapes included).

    ``fresh_ids``: the detection ids were drawn afresh on each side (uuid4): they are
    compared by form (same dtype kind and shape, each a canonical uuid) instead.
    """
    assert len(a) == len(b), f"{len(a)} vs {len(b)} detections"
    for name in FIELDS:
        _assert_arrays_equal(getattr(a, name), getattr(b, name), name)
    assert set(a.data) == set(b.data), f"data keys {sorted(a.data)} vs {sorted(b.data)}"
    for key in a.data:
        if key == DETECTION_ID and fresh_ids:
            _assert_uuid_form(np.asarray(a.data[key]), np.asarray(b.data[key]))
        else:
            _assert_arrays_equal(a.data[key], b.data[key], f"data[{key!r}]")
    assert set(a.metadata) == set(b.metadata), f"metadata keys {sorted(a.metadata)} vs {sorted(b.metadata)}"
    for key in a.metadata:
        _assert_arrays_equal(a.metadata[key], b.metadata[key], f"metadata[{key!r}]")
