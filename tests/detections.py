"""Exact comparison of inference-models' ``InstanceDetections`` (what a model's post_process returns)."""

from __future__ import annotations

from typing import Any

from inference_triton_preproc.validate.exact import detections_difference, results_difference


def assert_same_detections(got: Any, want: Any) -> None:
    difference = detections_difference(got, want)
    assert difference is None, difference


def assert_same_results(got: list[Any], want: list[Any]) -> None:
    difference = results_difference(got, want)
    assert difference is None, difference


def metadata(original_hw, after_hw, pad=(0, 0, 0, 0), crop_xy=(0, 0), inference=312):
    """inference-models' ``PreProcessingMetadata`` of a stretch (optionally letterboxed, statically cropped) frame."""
    from inference_models.entities import ImageDimensions
    from inference_models.models.common.roboflow.model_packages import PreProcessingMetadata, StaticCropOffset

    (h0, w0), (h, w) = original_hw, after_hw
    left, top, right, bottom = pad
    return PreProcessingMetadata(
        pad_left=left,
        pad_top=top,
        pad_right=right,
        pad_bottom=bottom,
        original_size=ImageDimensions(height=h0, width=w0),
        size_after_pre_processing=ImageDimensions(height=h, width=w),
        inference_size=ImageDimensions(height=inference, width=inference),
        scale_width=(inference - left - right) / w,
        scale_height=(inference - top - bottom) / h,
        static_crop_offset=StaticCropOffset(offset_x=crop_xy[0], offset_y=crop_xy[1], crop_width=w, crop_height=h),
    )
