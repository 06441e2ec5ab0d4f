"""The example scripts run (the ones that need no GPU or network)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_preprocess_frames_example() -> None:
    # Inherits TRITON_INTERPRET from conftest: interpreted without a GPU, compiled with one.
    env = dict(os.environ)
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "preprocess_frames.py"), "--frames", "2", "--size", "40"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "max |diff| vs Pillow: 0.0" in result.stdout
