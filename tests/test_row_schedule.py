"""Launching the kernels band by band of output rows while the source is still landing.

A pool frame's CUDA graph copies the frame in row chunks and launches each band of
output rows once the rows it reads have landed. Here each band is computed while the
rows that have not landed yet hold garbage: the result must still equal the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from parity import TOLERANCE
from photos import photo_at

from inference_triton_preproc import IMAGENET_MEAN, IMAGENET_STD
from inference_triton_preproc.api import resolve_device
from inference_triton_preproc.kernels.resize import resize_normalize, resize_tables, row_schedule
from inference_triton_preproc.reference import preprocess_reference

DEVICE = resolve_device(None)

CASES = [
    ("pil", (120, 200), (32, 32)),  # band kernel
    ("pil", (90, 120), (80, 40)),  # gather kernel (3x)
    ("cv2", (61, 77), (100, 31)),
    ("torch", (61, 77), (120, 19)),
    ("pil", (643, 6), (128, 76)),  # filtered columns first: everything after the last chunk
]


@pytest.mark.parametrize(("mode", "src_hw", "dst_hw"), CASES, ids=[f"{m}-{s[0]}x{s[1]}-{d[0]}x{d[1]}" for m, s, d in CASES])
def test_bands_computed_before_the_rest_landed_are_exact(mode, src_hw, dst_hw) -> None:
    frame = photo_at("coffee", *src_hw)
    tables = resize_tables(src_hw, dst_hw, mode, DEVICE)
    src = torch.from_numpy(frame)[None].to(DEVICE)
    out = torch.full((1, 3, *dst_hw), float("nan"), device=DEVICE)
    landed = [src_hw[0] * k // 8 for k in range(1, 9)]
    schedule = row_schedule(src, out, tables, landed)
    assert schedule[0][0] == 0 and all(a[1] == b[0] for a, b in zip(schedule, schedule[1:]))
    if not tables.vertical_first:
        assert schedule[-2][1] > 0  # some band runs before the frame has landed
    garbage = torch.from_numpy(np.random.default_rng(0).integers(0, 256, frame.shape, dtype=np.uint8))[None].to(DEVICE)
    for rows, tiles in zip(landed, schedule):
        partial = garbage.clone()
        partial[:, :rows] = src[:, :rows]
        resize_normalize(partial, out, tables, IMAGENET_MEAN, IMAGENET_STD, bgr=True, row_tiles=tiles)
    want = preprocess_reference(frame, dst_hw, mode=mode)
    assert (out.cpu() - want).abs().max().item() <= TOLERANCE[mode]


def test_schedule_rejects_landed_rows_that_do_not_end_at_the_frame() -> None:
    tables = resize_tables((64, 64), (16, 16), "pil", DEVICE)
    src = torch.zeros((1, 64, 64, 3), dtype=torch.uint8, device=DEVICE)
    out = torch.empty((1, 3, 16, 16), device=DEVICE)
    with pytest.raises(ValueError, match="landed_rows"):
        row_schedule(src, out, tables, [10, 32])
    with pytest.raises(ValueError, match="landed_rows"):
        row_schedule(src, out, tables, [40, 20, 64])
