"""The exact comparison of post_process results finds every kind of difference."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("inference_models")

from inference_models.models.base.instance_segmentation import InstanceDetections  # noqa: E402
from inference_models.models.base.types import InstancesRLEMasks  # noqa: E402

from inference_triton_preproc.validate.exact import detections_difference, results_difference  # noqa: E402


def _dense() -> InstanceDetections:
    mask = torch.zeros(2, 6, 5, dtype=torch.bool)
    mask[0, 1:3, 1:4] = True
    return InstanceDetections(
        xyxy=torch.tensor([[1, 1, 4, 3], [0, 0, 1, 1]], dtype=torch.int32),
        confidence=torch.tensor([0.9, 0.5]),
        class_id=torch.tensor([3, 1], dtype=torch.int32),
        mask=mask,
        image_size=(6, 5),
        mask_frame_size=(6, 5),
    )


def test_equal_results_have_no_difference() -> None:
    assert detections_difference(_dense(), _dense()) is None
    assert results_difference([_dense()], [_dense()]) is None


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d.mask.__setitem__((1, 5, 4), True), "mask: 1 values differ"),
        (lambda d: setattr(d, "confidence", d.confidence.double()), "confidence: torch.float64"),
        (lambda d: setattr(d, "xyxy", d.xyxy.float()), "xyxy: torch.float32"),
        (lambda d: d.class_id.__setitem__(0, 2), "class_id: 1 values differ"),
        (lambda d: setattr(d, "mask_frame_size", (6, 6)), "mask_frame_size"),
    ],
)
def test_each_difference_is_named(mutate, expected) -> None:
    changed = _dense()
    mutate(changed)
    assert expected in (detections_difference(changed, _dense()) or "")


def test_rle_strings_are_compared_byte_for_byte() -> None:
    want = copy.copy(_dense())
    want.mask = InstancesRLEMasks(image_size=(6, 5), masks=[b"abc", b"de"])
    got = copy.copy(want)
    got.mask = InstancesRLEMasks(image_size=(6, 5), masks=[b"abc", b"dd"])
    assert "1 RLE strings differ" in detections_difference(got, want)
    assert "2 frames != 1" in results_difference([want, want], [want])
