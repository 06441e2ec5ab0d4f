"""Exact comparison of inference-models' ``InstanceDetections`` (what a model's post_process returns)."""

from __future__ import annotations

from typing import Any

import torch


def assert_same_detections(got: Any, want: Any) -> None:
    """Same type, tensor dtypes, devices, shapes and values; RLE masks byte for byte."""
    assert type(got) is type(want)
    for field in ("xyxy", "confidence", "class_id"):
        a, b = getattr(got, field), getattr(want, field)
        assert (a.dtype, a.device, a.shape) == (b.dtype, b.device, b.shape), field
        assert torch.equal(a, b), field
    if isinstance(want.mask, torch.Tensor):
        assert isinstance(got.mask, torch.Tensor)
        assert (got.mask.dtype, got.mask.device, got.mask.shape) == (want.mask.dtype, want.mask.device, want.mask.shape)
        differing = int((got.mask != want.mask).sum())
        assert differing == 0, f"{differing} mask pixels differ"
    else:
        assert type(got.mask) is type(want.mask)
        assert got.mask.image_size == want.mask.image_size and got.mask.mask_size == want.mask.mask_size
        assert got.mask.masks == want.mask.masks
    for field in ("image_size", "mask_size", "mask_frame_size", "image_metadata", "bboxes_metadata"):
        assert getattr(got, field) == getattr(want, field), field


def assert_same_results(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert_same_detections(a, b)
