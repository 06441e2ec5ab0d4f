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
