"""The host tables + the kernel's PyTorch reference reproduce the real libraries.

No Triton here: :func:`resize_normalize_torch` performs the kernel's arithmetic with
tensor ops, so the tables can be checked against Pillow, OpenCV and PyTorch over many
shapes quickly. ``test_kernels.py`` then checks the kernel against the same reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from parity import TOLERANCE

from inference_triton_preproc import IMAGENET_MEAN, IMAGENET_STD
from inference_triton_preproc.kernels.resize import MODES, resize_normalize_torch, resize_tables
from inference_triton_preproc.reference import preprocess_reference

CPU = torch.device("cpu")


def table_reference(frame: np.ndarray, size: tuple[int, int], mode: str) -> torch.Tensor:
    tables = resize_tables(frame.shape[:2], size, mode, CPU)
    return resize_normalize_torch(torch.from_numpy(frame)[None], tables, IMAGENET_MEAN, IMAGENET_STD, bgr=True)


def assert_matches(frame: np.ndarray, size: tuple[int, int], mode: str) -> None:
    got = table_reference(frame, size, mode)
    want = preprocess_reference(frame, size, mode=mode)
    diff = (got - want).abs().max().item()
    assert diff <= TOLERANCE[mode], f"{mode} {frame.shape[:2]}->{size}: max |diff| {diff}"


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=150, deadline=None)
@given(
    src=st.tuples(st.integers(1, 160), st.integers(1, 160)),
    dst=st.tuples(st.integers(1, 160), st.integers(1, 160)),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_shapes_match_library(mode: str, src: tuple[int, int], dst: tuple[int, int], seed: int) -> None:
    frame = np.random.default_rng(seed).integers(0, 256, (*src, 3), dtype=np.uint8)
    assert_matches(frame, dst, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "rocket"])
@pytest.mark.parametrize("size", [312, 384, 432, 504, 576, 624, 768, (1, 1), (97, 31)])
def test_photos_match_library(photos: dict[str, np.ndarray], mode: str, name: str, size) -> None:
    size = (size, size) if isinstance(size, int) else size
    assert_matches(photos[name], size, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("src", [(1080, 1920), (2160, 3840)])
@pytest.mark.parametrize("size", [312, 624])
def test_large_sources_match_library(mode: str, src: tuple[int, int], size: int) -> None:
    from photos import photo_at

    assert_matches(photo_at("coffee", *src), (size, size), mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("src", "dst"),
    [((643, 6), (128, 76)), ((701, 7), (3, 700)), ((700, 7), (3, 700)), ((1000, 3), (999, 5)), ((1000, 3), (1001, 5)), ((5, 900), (2, 3))],
)
def test_tall_and_wide_images_match_library(mode: str, src, dst) -> None:
    # Pillow switches its pass order for images over 100x taller than wide.
    frame = np.random.default_rng(7).integers(0, 256, (*src, 3), dtype=np.uint8)
    assert_matches(frame, dst, mode)


def test_pil_weights_sum_to_one_in_fixed_point() -> None:
    # Pillow rounds each weight separately, so rows may sum to 2**22 +- a few; the
    # kernel relies on int32 accumulators not overflowing: 255 * sum + 2**21 < 2**31.
    for src, dst in [(1920, 312), (3840, 624), (7, 1), (1, 9), (1000, 999)]:
        weight = resize_tables((src, 1), (dst, 1), "pil", CPU).y_weight.long()
        sums = weight.sum(1)
        assert (sums - (1 << 22)).abs().max() <= weight.shape[1]
        assert (255 * sums + (1 << 21)).max() < 2**31
        assert (weight >= 0).all()
