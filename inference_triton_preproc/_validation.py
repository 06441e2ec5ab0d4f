"""Argument checks shared by :func:`preprocess` and :func:`preprocess_reference`.

Every check raises before anything is computed or written, with a message that names
the argument and says what was expected.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch

from .kernels.resize import MODES, Mode

Frame = Union[np.ndarray, torch.Tensor]
Images = Union[np.ndarray, torch.Tensor, Sequence[Frame]]

COLORS = ("bgr", "rgb")
OUT_DTYPES = (torch.float32, torch.float16)


def check_size(size: Any) -> tuple[int, int]:
    """``size`` as (H, W) positive ints; a single int means a square."""
    # The common forms first, without the (slow) abstract-base-class checks: this
    # runs once per frame on the hot path.
    if type(size) is int and size > 0:
        return size, size
    if type(size) is tuple and len(size) == 2 and type(size[0]) is int and type(size[1]) is int and min(size) > 0:
        return size
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, Sequence) or isinstance(size, str) or len(size) != 2:
        raise TypeError(f"size must be an int or a (height, width) pair of ints, got {size!r}")
    for v in size:
        if not isinstance(v, numbers.Integral) or isinstance(v, bool):
            raise TypeError(f"size must hold ints, got {size!r}")
        if v <= 0:
            raise ValueError(f"size must be positive, got {tuple(size)!r}")
    return int(size[0]), int(size[1])


def check_mode(mode: Any) -> Mode:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    return mode


def check_color(input_color: Any) -> str:
    if input_color not in COLORS:
        raise ValueError(f"input_color must be 'bgr' or 'rgb'; got {input_color!r}")
    return input_color


def check_channel_triple(name: str, values: Any, *, nonzero: bool = False) -> tuple[float, float, float]:
    """Three finite floats (one per RGB channel)."""
    if type(values) is tuple and len(values) == 3 and all(type(v) is float and math.isfinite(v) and (v or not nonzero) for v in values):
        return values
    try:
        triple = tuple(float(v) for v in values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of 3 floats, got {values!r}") from None
    if len(triple) != 3:
        raise ValueError(f"{name} must have 3 values (R, G, B), got {len(triple)}")
    if not all(math.isfinite(v) for v in triple):
        raise ValueError(f"{name} must be finite, got {triple!r}")
    if nonzero and any(v == 0 for v in triple):
        raise ValueError(f"{name} must not contain zeros, got {triple!r}")
    return triple  # type: ignore[return-value]


def check_out_dtype(out_dtype: Any) -> torch.dtype:
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be torch.float32 or torch.float16, got {out_dtype!r}")
    return out_dtype


def _check_frame(frame: Any, where: str) -> None:
    if isinstance(frame, np.ndarray):
        dtype, shape = frame.dtype, frame.shape
        uint8 = dtype == np.uint8
    elif isinstance(frame, torch.Tensor):
        dtype, shape = frame.dtype, tuple(frame.shape)
        uint8 = dtype == torch.uint8
    else:
        raise TypeError(f"{where} must be a numpy array or a torch tensor, got {type(frame).__name__}")
    if not uint8:
        raise TypeError(f"{where} must be uint8, got {dtype}")
    if len(shape) != 3:
        raise ValueError(f"{where} must be a 3-D (height, width, 3) image, got shape {shape}")
    if shape[2] != 3:
        raise ValueError(f"{where} must have 3 channels (height, width, 3), got shape {shape}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{where} must not be empty, got shape {shape}")


def check_images(images: Any) -> list[Frame]:
    """Split ``images`` into a list of HWC uint8 3-channel frames (views, no copies).

    Accepts one HWC numpy array or tensor, an NHWC tensor, or a list/tuple of HWC
    frames whose sizes may differ.
    """
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        if images.shape[0] == 0:
            raise ValueError("images must hold at least one frame, got an empty batch")
        frames: list[Frame] = list(images.unbind(0))
    elif isinstance(images, (np.ndarray, torch.Tensor)):
        frames = [images]
    elif isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images must hold at least one frame, got an empty list")
        frames = list(images)
    else:
        raise TypeError(
            "images must be a uint8 HWC numpy array, a list of them, or a uint8 HWC/NHWC torch tensor; "
            f"got {type(images).__name__}"
        )
    for i, frame in enumerate(frames):
        _check_frame(frame, "images" if len(frames) == 1 else f"images[{i}]")
    return frames


@dataclass(frozen=True)
class Request:
    """The checked arguments shared by :func:`preprocess` and :func:`preprocess_reference`."""

    frames: list[Frame]
    size: tuple[int, int]
    mode: Mode
    bgr: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    out_dtype: torch.dtype


def check_request(
    images: Any, size: Any, mode: Any, input_color: Any, mean: Any, std: Any, out_dtype: Any
) -> Request:
    """Check every argument the two entry points share; raises naming the bad one."""
    return Request(
        frames=check_images(images),
        size=check_size(size),
        mode=check_mode(mode),
        bgr=check_color(input_color) == "bgr",
        mean=check_channel_triple("mean", mean),
        std=check_channel_triple("std", std, nonzero=True),
        out_dtype=check_out_dtype(out_dtype),
    )
