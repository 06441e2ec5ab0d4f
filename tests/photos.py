"""Real photographs for the tests (shipped with scikit-image, no download)."""

from __future__ import annotations

import numpy as np

# Real photographs shipped with scikit-image (no download needed).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def load_photo(name: str) -> np.ndarray:
    """A real RGB photo from scikit-image as a BGR uint8 HWC array (as OpenCV decodes)."""
    from skimage import data

    rgb = getattr(data, name)()
    return np.ascontiguousarray(rgb[..., ::-1])


def photo_at(name: str, height: int, width: int) -> np.ndarray:
    """A real photo brought to (height, width) with OpenCV: 1080p/4K-class sources with photo content."""
    import cv2

    return cv2.resize(load_photo(name), (width, height), interpolation=cv2.INTER_CUBIC)
