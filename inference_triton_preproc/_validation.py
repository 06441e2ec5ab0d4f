"""Argument checks shared by :func:`preprocess` and :func:`preprocess_reference`.

Every check raises before anything is computed or written, with a message that names
the argument and says what was expected.
"""

from __future__ import annotations

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


#: The largest output side :func:`check_size` accepts: 16384, the largest texture side
#: of current GPUs; one float32 frame of that square is already 3 GiB.
MAX_SIZE = 16384


def check_size(size: Any) -> tuple[int, int]:
    """``size`` as (H, W) ints in 1..:data:`MAX_SIZE`; a single int means a square."""
    # The common forms first, without the (slow) abstract-base-class checks: this
    # runs once per frame on the hot path.
    if type(size) is int and 0 < size <= MAX_SIZE:
        return size, size
    if (
        type(size) is tuple
        and len(size) == 2
        and type(size[0]) is int
        and type(size[1]) is int
        and 0 < min(size)
        and max(size) <= MAX_SIZE
    ):
        return size
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, Sequence) or isinstance(size, str) or len(size) != 2:
        raise TypeError(f"size must be an int or a (height, width) pair of ints, got {size!r}")
    for v in size:
        if not isinstance(v, numbers.Integral) or isinstance(v, bool):
            raise TypeError(f"size must hold ints, got {size!r}")
        if not 0 < v <= MAX_SIZE:
            raise ValueError(f"size must be within 1..{MAX_SIZE}, got {tuple(size)!r}")
    return int(size[0]), int(size[1])


def check_mode(mode: Any) -> Mode:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    return mode


def check_color(input_color: Any) -> str:
    if input_color not in COLORS:
        raise ValueError(f"input_color must be 'bgr' or 'rgb'; got {input_color!r}")
    return input_color


# float64 values that round to a finite float32 are those below the midpoint between
# float32's largest value and 2**128; those that round to a nonzero one lie beyond half
# the smallest subnormal (both midpoints round to even: to inf and to 0).
_FLOAT32_OVERFLOW = 2.0**128 - 2.0**103
_FLOAT32_UNDERFLOW = 2.0**-150
_FLOAT32_NORMAL = 2.0**-126  # the smallest normal float32


def _real_values(name: str, values: Any) -> list[float]:
    """``values`` as a list of floats: a sequence (not text) or a 1-D array of real numbers."""
    if isinstance(values, torch.Tensor):
        real = values.dtype != torch.bool and not values.dtype.is_complex
    elif isinstance(values, np.ndarray):
        real = values.dtype.kind in "iuf"
    else:
        # Text and mappings are iterable but are not a sequence of numbers ("123", {0: 1}).
        if not isinstance(values, Sequence) or isinstance(values, (str, bytes)):
            raise TypeError(f"{name} must be a sequence of 3 real numbers, got {type(values).__name__}")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"{name} must hold real numbers, got {v!r} in {values!r}")
        return [float(v) for v in values]
    if values.ndim != 1 or not real:
        raise TypeError(f"{name} must be a 1-D array of real numbers, got {values.ndim}-D {values.dtype}")
    return [float(v) for v in values.tolist()]


def check_channel_triple(name: str, values: Any, *, nonzero: bool = False) -> tuple[float, float, float]:
    """Three real numbers (one per RGB channel), finite and (with ``nonzero``) nonzero
    once rounded to float32, which is what the kernels and references compute in."""
    if type(values) is tuple and len(values) == 3 and all(type(v) is float for v in values):
        triple = values
    else:
        triple = tuple(_real_values(name, values))
        if len(triple) != 3:
            raise ValueError(f"{name} must have 3 values (R, G, B), got {len(triple)}")
    # abs(nan) < x is False, so nan fails here too.
    if not all(abs(v) < _FLOAT32_OVERFLOW for v in triple):
        raise ValueError(f"{name} must be finite in float32, got {triple!r}")
    if nonzero and not all(abs(v) > _FLOAT32_UNDERFLOW for v in triple):
        raise ValueError(f"{name} must not contain zeros (in float32), got {triple!r}")
    if type(values) is tuple and values == triple and all(v == 0 or abs(v) >= _FLOAT32_NORMAL for v in triple):
        return triple  # the common case: already float32 values, nothing to round
    # The kernels take float32 arguments: pass exactly those (Triton would type a value
    # below float32's range as float64 and fail to compile), normal or zero only.
    rounded = tuple(float(np.float32(v)) for v in triple)
    if not all(v == 0 or abs(v) >= _FLOAT32_NORMAL for v in rounded):
        raise ValueError(f"{name} must be zero or at least {_FLOAT32_NORMAL:.4g} in magnitude (float32 normal), got {triple!r}")
    return rounded  # type: ignore[return-value]


def check_output_range(mean: tuple[float, float, float], std: tuple[float, float, float], out_dtype: torch.dtype) -> None:
    """``(x - mean) / std`` for x in [0, 1] must be finite in ``out_dtype``: a tiny std
    would otherwise turn every pixel into +-inf."""
    largest = max(max(abs(m), abs(1.0 - m)) / abs(d) for m, d in zip(mean, std))
    limit = torch.finfo(out_dtype).max
    if not largest <= limit:
        raise ValueError(
            f"mean and std give outputs up to {largest:.3g}, beyond {out_dtype}'s range ({limit:.4g}): "
            f"mean={mean!r}, std={std!r}"
        )


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
    request = Request(
        frames=check_images(images),
        size=check_size(size),
        mode=check_mode(mode),
        bgr=check_color(input_color) == "bgr",
        mean=check_channel_triple("mean", mean),
        std=check_channel_triple("std", std, nonzero=True),
        out_dtype=check_out_dtype(out_dtype),
    )
    check_output_range(request.mean, request.std, request.out_dtype)
    return request
