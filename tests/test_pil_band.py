"""The tensor-core band kernel (Pillow mode, large downscales) against Pillow.

Its band matrices are checked against the gather kernel's PyTorch reference over many
shapes (fast, no kernel), and the kernel itself on real photos, under the Triton
interpreter on a CPU-only machine (compiled on a GPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from photos import photo_at

from inference_triton_preproc import IMAGENET_MEAN, IMAGENET_STD, preprocess
from inference_triton_preproc.api import resolve_device
from inference_triton_preproc.kernels.pil_band import (
    MIN_HORIZONTAL_SCALE,
    band_tables,
    resize_normalize_band,
    resize_normalize_band_torch,
)
from inference_triton_preproc.kernels.resize import _pil_axis, resize_normalize_torch, resize_tables
from inference_triton_preproc.reference import preprocess_reference

DEVICE = resolve_device(None)


def forced_band(src_hw: tuple[int, int], dst_hw: tuple[int, int], device: torch.device = DEVICE):
    (h_in, w_in), (h_out, w_out) = src_hw, dst_hw
    return band_tables(src_hw, dst_hw, _pil_axis(h_in, h_out), _pil_axis(w_in, w_out), device, force=True)


@settings(max_examples=60, deadline=None)
@given(
    h_in=st.integers(1, 160),
    w_in=st.integers(1, 160),
    h_out=st.integers(1, 48),
    w_out=st.integers(1, 48),
    seed=st.integers(0, 2**16),
    bgr=st.booleans(),
)
def test_band_matrices_compute_the_gather_reference(h_in, w_in, h_out, w_out, seed, bgr) -> None:
    band = forced_band((h_in, w_in), (h_out, w_out), torch.device("cpu"))
    if band is None:  # a row tile would need more than 128 source rows
        assert h_in > 7 * h_out
        return
    frame = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (2, h_in, w_in, 3), dtype=np.uint8))
    tables = resize_tables((h_in, w_in), (h_out, w_out), "pil", torch.device("cpu"))
    want = resize_normalize_torch(frame, tables, IMAGENET_MEAN, IMAGENET_STD, bgr=bgr)
    got = resize_normalize_band_torch(frame, band, IMAGENET_MEAN, IMAGENET_STD, bgr=bgr)
    assert torch.equal(got, want)


def test_weights_split_into_float16_exact_halves() -> None:
    band = forced_band((1080, 1920), (312, 312), torch.device("cpu"))
    for half in (band.x_hi, band.x_lo, band.y_hi, band.y_lo):
        assert half.dtype == torch.float16 and half.min() >= 0 and half.max() <= 2048
        assert torch.equal(half, half.float().round().half())
    # Every column of a horizontal band sums to Pillow's 1.0 (2**22) give or take rounding.
    sums = band.x_hi.double().sum(1) * 2048 + band.x_lo.double().sum(1)
    live = sums > 0
    assert ((sums[live] - 2**22).abs() <= 64).all()


def test_dispatch_rules() -> None:
    cpu = torch.device("cpu")
    assert resize_tables((1080, 1920), (312, 312), "pil", cpu).band is not None
    assert resize_tables((2160, 3840), (768, 768), "pil", cpu).band is not None
    # A narrow filter (below a 4x horizontal downscale): the gather kernel.
    assert 1920 < MIN_HORIZONTAL_SCALE * 624
    assert resize_tables((1080, 1920), (624, 624), "pil", cpu).band is None
    for mode in ("cv2", "torch"):
        assert resize_tables((1080, 1920), (312, 312), mode, cpu).band is None
    # More than 128 source rows per 16 output rows.
    assert resize_tables((1080, 1920), (60, 312), "pil", cpu).band is None
    # Much taller than wide: Pillow filters rows first, the band kernel cannot.
    tall = resize_tables((6400, 60), (64, 12), "pil", cpu)
    assert tall.vertical_first and tall.band is None


# (source (H, W), target (H, W)) that take the band kernel through preprocess.
BAND_SHAPES = [
    ((216, 384), (64, 64)),  # 1080p / 5 into a small square
    ((270, 480), (78, 78)),  # 1080p / 4 into 312 / 4
    ((225, 401), (33, 100)),  # odd sizes, different scales per axis
    ((97, 64), (31, 16)),  # exactly 4x horizontally, rows need a 64-row tile
    ((520, 160), (70, 33)),  # rows need a 128-row tile
]


@pytest.mark.parametrize(("src", "dst"), BAND_SHAPES, ids=[f"{s[0]}x{s[1]}-{d[0]}x{d[1]}" for s, d in BAND_SHAPES])
def test_band_kernel_is_bit_exact_to_pillow(photos, src, dst) -> None:
    assert resize_tables(src, dst, "pil", DEVICE).band is not None
    frames = [photo_at(name, *src) for name in ("coffee", "rocket")]
    for kwargs in ({}, {"input_color": "rgb", "out_dtype": torch.float16}):
        got = preprocess(frames, dst, **kwargs).float().cpu()
        want = preprocess_reference(frames, dst, **kwargs).float()
        assert torch.equal(got, want)


def test_band_kernel_reads_crops_and_falls_back_for_flips(photos) -> None:
    full = photo_at("astronaut", 300, 520)
    crop = full[10:280, 7:487]  # rows of contiguous B, G, R bytes with a larger stride
    flip = crop[:, ::-1]  # negative pixel stride: the gather kernel serves it
    assert resize_tables(crop.shape[:2], (60, 60), "pil", DEVICE).band is not None
    for frame in (crop, flip):
        got = preprocess(frame, 60).cpu()
        assert torch.equal(got, preprocess_reference(np.ascontiguousarray(frame), 60))


def test_forced_band_kernel_upscales_exactly(photos) -> None:
    frame = photo_at("chelsea", 40, 50)
    band = forced_band((40, 50), (64, 80))
    out = torch.empty((1, 3, 64, 80), device=DEVICE)
    src = torch.from_numpy(frame)[None].to(DEVICE)
    resize_normalize_band(src, out, band, IMAGENET_MEAN, IMAGENET_STD, bgr=True)
    assert torch.equal(out.cpu(), preprocess_reference(frame, (64, 80)))
