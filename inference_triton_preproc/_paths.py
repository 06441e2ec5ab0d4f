"""Up-front checks of output files named on a command line."""

from __future__ import annotations

import os
from pathlib import Path


def check_output_file(path: Path, option: str) -> str | None:
    """Why ``path`` (the value of ``option``) cannot be written, in one line, or None.

    Checked before any work, so that a bad path costs no run and ends in a message
    rather than a traceback after the results are computed. A file that did not exist
    is created to prove it can be, then removed again.
    """
    if path.is_dir():
        return f"{option} {path}: is a directory"
    existed = path.exists()
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as error:
        return f"{option} {path}: cannot write ({error.strerror or error})"
    if not existed:
        os.unlink(path)
    return None
