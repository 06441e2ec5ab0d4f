"""The fused kernel, through ``preprocess``, against the real libraries.

On a CPU-only machine these run under the Triton interpreter (set up in conftest.py),
which costs ~20 ms per program instance plus the work of every tap, so the cases are
picked to break kernels (edges, degenerate axes, exact ratios, large downscales) rather
than to be many. With a GPU they run compiled on it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from parity import TOLERANCE
from photos import photo_at
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_triton_preproc import IMAGENET_MEAN, IMAGENET_STD, preprocess
from inference_triton_preproc.kernels.resize import MODES, resize_normalize_torch, resize_tables
from inference_triton_preproc.reference import preprocess_reference



def max_diff(frames, size, mode: str, **kwargs) -> float:
    got = preprocess(frames, size, mode=mode, **kwargs).float().cpu()
    want = preprocess_reference(frames, size, mode=mode, **kwargs).float()
    assert got.shape == want.shape
    return (got - want).abs().max().item()


# (source (H, W), target (H, W)): shapes that break kernels.
AWKWARD = [
    ((1, 1), (1, 1)),
    ((1, 1), (5, 7)),  # upscale from a single pixel
    ((1, 37), (4, 9)),  # 1xN
    ((41, 1), (5, 3)),  # Nx1
    ((64, 48), (1, 1)),  # tiny target
    ((50, 70), (2, 3)),
    ((20, 30), (97, 113)),  # pure upscale
    ((128, 96), (64, 48)),  # exact 2x
    ((96, 129), (32, 43)),  # exact 3x
    ((37, 53), (37, 53)),  # same size
    ((101, 203), (47, 61)),  # odd sizes
    ((33, 17), (16, 65)),  # down one axis, up the other
    ((643, 6), (128, 76)),  # taller than 100x its width: recent Pillow filters rows first
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("src", "dst"), AWKWARD, ids=[f"{s[0]}x{s[1]}-{d[0]}x{d[1]}" for s, d in AWKWARD])
def test_awkward_shapes(photos, mode: str, src, dst) -> None:
    frame = np.ascontiguousarray(photo_at("chelsea", 1080, 1920)[: src[0], : src[1]])
    assert max_diff(frame, dst, mode) <= TOLERANCE[mode]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [312, 384, 432, 504, 576, 624, 768])
def test_rfdetr_squares_from_photo(photos, mode: str, size: int) -> None:
    # astronaut is 512x512: smaller squares downscale, larger ones upscale.
    assert max_diff(photos["astronaut"], size, mode) <= TOLERANCE[mode]


@pytest.mark.parametrize("mode", MODES)
def test_photo_batch_of_mixed_sizes(photos, mode: str) -> None:
    frames = [photos["coffee"], photos["rocket"], photos["chelsea"], photos["rocket"]]
    assert max_diff(frames, (72, 88), mode) <= TOLERANCE[mode]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("src", "size"), [((1080, 1920), 312), ((1080, 1920), 624), ((2160, 3840), 312)])
def test_large_sources(mode: str, src, size: int) -> None:
    assert max_diff(photo_at("rocket", *src), size, mode) <= TOLERANCE[mode]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("input_color", ["bgr", "rgb"])
def test_input_color(photos, mode: str, input_color: str) -> None:
    assert max_diff(photos["coffee"], (60, 90), mode, input_color=input_color) <= TOLERANCE[mode]


@pytest.mark.parametrize("mode", MODES)
def test_float16_is_float32_rounded_to_nearest_even(photos, mode: str) -> None:
    frame = photos["astronaut"]
    half = preprocess(frame, (64, 80), mode=mode, out_dtype=torch.float16)
    full = preprocess(frame, (64, 80), mode=mode)
    assert half.dtype == torch.float16
    assert torch.equal(half, full.to(torch.float16))
    assert max_diff(frame, (64, 80), mode, out_dtype=torch.float16) <= (0 if mode != "torch" else 2e-3)


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=12, deadline=None)
@given(
    src=st.tuples(st.integers(1, 90), st.integers(1, 90)),
    dst=st.tuples(st.integers(1, 60), st.integers(1, 60)),
    seed=st.integers(0, 2**31 - 1),
    bgr=st.booleans(),
)
def test_kernel_equals_its_torch_reference(mode: str, src, dst, seed: int, bgr: bool) -> None:
    frame = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (*src, 3), dtype=np.uint8))
    got = preprocess(frame, dst, mode=mode, input_color="bgr" if bgr else "rgb").cpu()
    tables = resize_tables(src, dst, mode, torch.device("cpu"))
    want = resize_normalize_torch(frame[None], tables, IMAGENET_MEAN, IMAGENET_STD, bgr=bgr)
    assert (got - want).abs().max().item() <= TOLERANCE[mode]
