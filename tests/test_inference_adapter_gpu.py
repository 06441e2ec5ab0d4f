"""The ``inference_adapter`` surface on a CUDA device: real photos and clip frames at 1080p and 4K.

The stock adapter and the surface run the same model on the GPU; responses must be ``==``
and ``model_dump()``-equal (polygons and RLE), and contours traced on crops cut on the
device must equal ``masks2poly`` on the full host frames. ``-m gpu``; skipped without CUDA.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import adapter_helpers as helpers
import inference_triton_preproc as itp
from inference_triton_preproc.plugin import call_counts
from inference_triton_preproc.validate.default_model import load_sample_frames
from photos import photo_at

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SIZES = {"1080p": (1080, 1920), "4k": (2160, 3840)}


@pytest.fixture(scope="module")
def adapter():
    itp.uninstall()
    return helpers.make_adapter("cuda")


@pytest.fixture(scope="module")
def frames() -> dict[str, list[np.ndarray]]:
    clip = load_sample_frames(limit=3, stride=20)
    out = {}
    for name, (height, width) in SIZES.items():
        scaled = [cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR) for f in clip]
        out[name] = [photo_at("astronaut", height, width), photo_at("coffee", height, width), *scaled]
    return out


@pytest.fixture(autouse=True)
def _uninstalled():
    itp.uninstall()
    yield
    itp.uninstall()


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("kwargs", [{}, {"confidence": 0.05}, {"response_mask_format": "rle", "confidence": 0.05}], ids=["polygons", "polygons-low-conf", "rle"])
@pytest.mark.parametrize("model_postprocess", [False, True], ids=["stock-model", "fused-model"])
def test_responses_equal_stock_on_cuda(adapter, frames, size, kwargs, model_postprocess) -> None:
    before = call_counts().get("adapter", 0)
    want, got = helpers.stock_and_ours(adapter, frames[size], model_postprocess=model_postprocess, **kwargs)
    helpers.assert_same_responses(want, got)
    assert call_counts().get("adapter", 0) - before == len(frames[size])
    if kwargs.get("confidence"):
        assert helpers.count_predictions(want) > 0


@pytest.mark.parametrize("size", list(SIZES))
def test_contours_on_device_crops_equal_masks2poly(adapter, frames, size) -> None:
    for frame in frames[size]:
        (detections,) = adapter._model(frame, mask_format="dense", confidence=0.05)
        assert detections.mask.is_cuda and len(detections) > 0
        helpers.assert_contours_equal(detections.mask)


def test_batch_on_cuda_equals_stock(adapter, frames) -> None:
    want, got = helpers.stock_and_ours(adapter, [frames["1080p"][:3]], confidence=0.05)
    helpers.assert_same_responses(want, got)
