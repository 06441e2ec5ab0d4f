"""Fused Triton preprocessing for RF-DETR in Roboflow's inference / inference-models.

Public API:

* :func:`preprocess`: uint8 frames -> normalised ``[N, 3, H, W]`` tensor on the GPU,
  bit-exact to Pillow (``mode="pil"``) or OpenCV (``"cv2"``), within 2e-6 of PyTorch
  (``"torch"``).
* :data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`: the default normalisation.
* :func:`install`, :func:`uninstall`, :func:`is_installed`: route inference-models'
  RF-DETR segmentation adapters through the kernels (done automatically at start-up
  when ``RFDETR_USE_TRITON_PREPROC=1``).
* :mod:`inference_triton_preproc.reference`: the same results from the real libraries.

Attributes are imported on first use: the start-up hook imports this package in every
Python process, so it must stay cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .api import preprocess
    from .plugin import install, is_installed, uninstall
    from .reference import IMAGENET_MEAN, IMAGENET_STD

_LAZY = {
    "preprocess": ".api",
    "IMAGENET_MEAN": ".reference",
    "IMAGENET_STD": ".reference",
    "install": ".plugin",
    "uninstall": ".plugin",
    "is_installed": ".plugin",
}

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "__version__", "install", "is_installed", "preprocess", "uninstall"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
