"""The one inference-models input definition the package builds itself: a plain stretch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def stretch_network_input(
    height: int, width: int, mean: Sequence[float], std: Sequence[float], color_mode: str = "rgb"
) -> dict[str, Any]:
    """``network_input`` of an ``inference_config.json``: stretch to (height, width), 3 channels,
    /255 then ``(x - mean) / std`` (ImageNet-style), in ``color_mode`` channel order."""
    return {
        "training_input_size": {"height": height, "width": width},
        "dynamic_spatial_size_supported": False,
        "color_mode": color_mode,
        "resize_mode": "stretch",
        "input_channels": 3,
        "scaling_factor": 255,
        "normalization": [list(mean), list(std)],
    }
