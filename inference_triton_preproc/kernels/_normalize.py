"""The step both kernel families end with: resized values to normalised floats.

Every reference computes ``(q / 255 - mean) / std`` per RGB plane in float32, with true
divisions; :func:`normalize` is that step inside a kernel, :func:`normalize_torch` the
same in PyTorch for the kernels' readable references.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def normalize(q, plane, mean0, mean1, mean2, std0, std1, std2):
    """``(q / 255 - mean) / std`` for float32 ``q``; ``plane`` (int, broadcastable to
    ``q``) is the output plane of each element: 0 R, 1 G, 2 B."""
    mean = tl.where(plane == 0, mean0, tl.where(plane == 1, mean1, mean2))
    std = tl.where(plane == 0, std0, tl.where(plane == 1, std1, std2))
    # IEEE-rounded divisions: a plain '/' or a fused multiply-add is 1-2 ULP off the
    # references, which divide.
    return tl.div_rn(tl.div_rn(q, 255.0) - mean, std)


def normalize_args(mean: tuple[float, float, float], std: tuple[float, float, float]) -> tuple[float, ...]:
    """:func:`normalize`'s ``mean0, mean1, mean2, std0, std1, std2`` as kernel arguments."""
    return (*map(float, mean), *map(float, std))


def normalize_torch(
    q: torch.Tensor,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """:func:`normalize` for float32 ``q`` of shape ``[N, 3, H, W]`` (RGB planes); returns a
    contiguous ``out_dtype`` tensor."""
    m = torch.tensor(mean, dtype=torch.float32, device=q.device)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32, device=q.device)[:, None, None]
    return ((q / 255.0 - m) / s).contiguous().to(out_dtype)
