"""Decoding frames with OpenCV, shared by the probe, the default model and the tools."""

from __future__ import annotations

import os

import numpy as np


class VideoReadError(RuntimeError):
    """A video could not be opened or yielded no frame."""


def read_frames(source: str | os.PathLike[str] | int, limit: int | None = None, stride: int = 1) -> list[np.ndarray]:
    """Decode frames of a video file, stream URL or camera index.

    Args:
        source: anything ``cv2.VideoCapture`` opens.
        limit: most frames to return (after striding); None for all.
        stride: keep every ``stride``-th frame, starting with frame 0.

    Returns:
        uint8 ``(H, W, 3)`` BGR arrays, as OpenCV decodes them.

    Raises:
        ValueError: ``stride`` < 1 or ``limit`` < 0.
        VideoReadError: the source cannot be opened or yields no frame.
    """
    import cv2

    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    capture = cv2.VideoCapture(source if isinstance(source, int) else os.fspath(source))
    try:
        if not capture.isOpened():
            raise VideoReadError(f"cannot open video {source!r}")
        frames: list[np.ndarray] = []
        index = 0
        while limit is None or len(frames) < limit:
            ok, frame = capture.read()
            if not ok:
                break
            if index % stride == 0:
                frames.append(frame)
            index += 1
    finally:
        capture.release()
    if not frames and limit != 0:
        raise VideoReadError(f"no frame decoded from {source!r}")
    return frames
