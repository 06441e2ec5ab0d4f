"""Exact comparison of what a model's ``post_process`` returns (inference-models' ``InstanceDetections``).

Equal means equal: same types, tensor dtypes, devices, shapes and values, dense masks pixel
for pixel, RLE counts byte for byte, and the same size fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

_TENSORS = ("xyxy", "confidence", "class_id")
_FIELDS = ("image_size", "mask_size", "mask_frame_size", "image_metadata", "bboxes_metadata")


def _tensor_difference(name: str, got: torch.Tensor, want: torch.Tensor) -> str | None:
    if (got.dtype, got.device, tuple(got.shape)) != (want.dtype, want.device, tuple(want.shape)):
        return f"{name}: {got.dtype} {got.device} {tuple(got.shape)} != {want.dtype} {want.device} {tuple(want.shape)}"
    differing = int((got != want).sum())
    return f"{name}: {differing} values differ" if differing else None


def detections_difference(got: Any, want: Any) -> str | None:
    """The first way ``got`` differs from ``want`` (two ``InstanceDetections``), or None when equal."""
    if type(got) is not type(want):
        return f"type {type(got).__name__} != {type(want).__name__}"
    for name in _TENSORS:
        difference = _tensor_difference(name, getattr(got, name), getattr(want, name))
        if difference:
            return difference
    if isinstance(want.mask, torch.Tensor):
        if not isinstance(got.mask, torch.Tensor):
            return f"mask: {type(got.mask).__name__} instead of a tensor"
        difference = _tensor_difference("mask", got.mask, want.mask)
        if difference:
            return difference
    else:
        if type(got.mask) is not type(want.mask):
            return f"mask: {type(got.mask).__name__} != {type(want.mask).__name__}"
        for name in ("image_size", "mask_size"):
            if getattr(got.mask, name) != getattr(want.mask, name):
                return f"mask.{name}: {getattr(got.mask, name)} != {getattr(want.mask, name)}"
        differing = sum(a != b for a, b in zip(got.mask.masks, want.mask.masks))
        if len(got.mask.masks) != len(want.mask.masks) or differing:
            return f"mask: {differing} RLE strings differ ({len(got.mask.masks)} vs {len(want.mask.masks)})"
    for name in _FIELDS:
        if getattr(got, name) != getattr(want, name):
            return f"{name}: {getattr(got, name)} != {getattr(want, name)}"
    return None


def results_difference(got: Sequence[Any], want: Sequence[Any]) -> str | None:
    """The first difference between two ``post_process`` results (one entry per frame), or None."""
    if len(got) != len(want):
        return f"{len(got)} frames != {len(want)}"
    for frame, (a, b) in enumerate(zip(got, want)):
        difference = detections_difference(a, b)
        if difference:
            return f"frame {frame}: {difference}"
    return None
