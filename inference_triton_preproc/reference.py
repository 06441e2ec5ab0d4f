"""The three reference preprocessing paths, computed on the CPU by the real libraries.

These are what the fused kernels are checked against: Pillow's ``Image.resize`` with
``BILINEAR`` (antialiased), OpenCV's ``cv2.resize`` with ``INTER_LINEAR`` on uint8, and
PyTorch's ``F.interpolate(bilinear, align_corners=False, antialias=False)`` on 0..255
floats; each followed by ``x / 255`` and ``(x - mean) / std`` in float32, RGB planes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ._arrays import host_tensor
from ._validation import Images, check_request
from .kernels.resize import Mode

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _resize_rgb_uint8(rgb: np.ndarray, size: tuple[int, int], mode: Mode) -> torch.Tensor:
    """Resize one contiguous RGB uint8 HWC frame; returns float32 [3, H, W] in 0..255."""
    height, width = size
    if mode == "pil":
        from PIL import Image

        resized = np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))
        return torch.from_numpy(resized.copy()).permute(2, 0, 1).float()
    if mode == "cv2":
        import cv2

        resized = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(resized).permute(2, 0, 1).float()
    chw = host_tensor(rgb).permute(2, 0, 1)[None].float()
    return F.interpolate(chw, size=size, mode="bilinear", align_corners=False, antialias=False)[0]


def preprocess_reference(
    images: Images,
    size: int | tuple[int, int],
    *,
    mode: Mode = "pil",
    input_color: str = "bgr",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Reference preprocessing on the CPU with Pillow, OpenCV or PyTorch.

    Args:
        images: one uint8 HWC frame (numpy or tensor), a list of them, or an NHWC tensor.
        size: target (height, width) in pixels, or one int for a square.
        mode: ``"pil"``, ``"cv2"`` or ``"torch"``: which library resizes.
        input_color: channel order of ``images``, ``"bgr"`` or ``"rgb"``.
        mean, std: per RGB channel, applied after dividing by 255.
        out_dtype: ``torch.float32`` or ``torch.float16`` (rounded from float32).

    Returns:
        CPU tensor ``[N, 3, H, W]`` of ``out_dtype``, RGB planes.
    """
    request = check_request(images, size, mode, input_color, mean, std, out_dtype)
    mean_t = torch.tensor(request.mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(request.std, dtype=torch.float32)[:, None, None]

    planes = []
    for frame in request.frames:
        array = frame.detach().cpu().numpy() if isinstance(frame, torch.Tensor) else frame
        rgb = np.ascontiguousarray(array[..., ::-1] if request.bgr else array)
        x = _resize_rgb_uint8(rgb, request.size, request.mode) / 255.0
        planes.append(((x - mean_t) / std_t).to(request.out_dtype))
    return torch.stack(planes)
