"""Files shipped inside the package."""

from __future__ import annotations

from pathlib import Path

_ASSETS = Path(__file__).resolve().parent / "assets"


def sample_video_path() -> Path:
    """A short real clip (pedestrians, 768x576) shipped with the package; see assets/README.md."""
    return _ASSETS / "sample.mp4"
