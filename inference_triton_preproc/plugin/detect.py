"""Which reference resize the installed inference-models uses (``RFDETR_TRITON_PREPROC_MODE=auto``).

inference-models switched from OpenCV to Pillow in 0.28; rather than keep a version
table, the backend runs the host's real ``pre_process_network_input`` once on a small
synthetic frame with the model's own input definition and picks the kernel mode whose
arithmetic reproduces it exactly.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch

from .._host import stretch_network_input
from ..kernels.resize import MODES, resize_normalize_torch, resize_tables

logger = logging.getLogger(__name__)

# The probe frame downscales by a non-integer factor on both axes, where the three
# references disagree on most pixels.
_PROBE_SCALE = 2.37


@functools.lru_cache(maxsize=32)
def detect_mode(
    target_hw: tuple[int, int],
    network_color: str,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> str | None:
    """The kernel mode that reproduces the host's stock path for this input definition.

    Args:
        target_hw: the network's input (height, width) in pixels.
        network_color: ``"rgb"`` or ``"bgr"``, the network's channel order.
        mean, std: the normalisation the kernel will apply (0 and 1 for none).

    Returns:
        ``"pil"``, ``"cv2"`` or ``"torch"``, or None when none matches (then the
        backend stays off for such models, with the reason logged).
    """
    from inference_models.models.common.roboflow.model_packages import (
        ImagePreProcessing,
        NetworkInputDefinition,
    )
    from inference_models.models.rfdetr.pre_processing import pre_process_network_input

    height, width = target_hw
    src_hw = (int(height * _PROBE_SCALE) + 3, int(width * _PROBE_SCALE) + 5)
    frame = np.random.default_rng(20261124).integers(0, 256, (*src_hw, 3), dtype=np.uint8)
    network_input = NetworkInputDefinition.model_validate(stretch_network_input(height, width, mean, std, network_color))
    stock, _ = pre_process_network_input(
        images=[frame],
        image_pre_processing=ImagePreProcessing(),
        network_input=network_input,
        target_device=torch.device("cpu"),
        input_color_format="bgr",
    )
    bgr = network_color != "bgr"
    for mode in MODES:
        tables = resize_tables(src_hw, target_hw, mode, torch.device("cpu"))
        ours = resize_normalize_torch(torch.from_numpy(frame)[None], tables, mean, std, bgr=bgr)
        diff = (ours - stock.float()).abs().max().item()
        if diff == 0 or (mode == "torch" and diff <= 2e-6):
            logger.debug("stock RF-DETR preprocessing matches kernel mode %r (max |diff| %g)", mode, diff)
            return mode
    return None
