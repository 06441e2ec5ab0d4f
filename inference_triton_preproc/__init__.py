"""Fused Triton preprocessing for RF-DETR in Roboflow's inference / inference-models.

Public API:

* :func:`preprocess`: uint8 frames -> normalised ``[N, 3, H, W]`` tensor on the GPU,
  bit-exact to Pillow (``mode="pil"``) or OpenCV (``"cv2"``), within 2e-6 of PyTorch
  (``"torch"``).
* :data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`: the default normalisation.
* :mod:`inference_triton_preproc.reference`: the same results from the real libraries.
"""

from ._version import __version__
from .api import preprocess
from .reference import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "__version__", "preprocess"]
