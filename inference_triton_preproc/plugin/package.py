"""The host versions the plugin supports, in one place.

The backend patches inference-models' adapter classes; it refuses to do so for
versions outside this range and logs why.
"""

from __future__ import annotations

from importlib import metadata

from packaging.specifiers import SpecifierSet
from packaging.version import Version

HOST = "inference-models"
SUPPORTED = SpecifierSet(">=0.39.0,<0.40")
TESTED = ("0.39.5",)


def host_version() -> str | None:
    """The installed inference-models version, or None when it is not installed."""
    try:
        return metadata.version(HOST)
    except metadata.PackageNotFoundError:
        return None


def unsupported_reason(version: str | None = None) -> str | None:
    """Why the installed (or given) host version cannot be patched, or None when it can."""
    version = host_version() if version is None else version
    if version is None:
        return f"{HOST} is not installed"
    if Version(version) not in SUPPORTED:
        return f"{HOST} {version} is outside the supported range {SUPPORTED} (tested: {', '.join(TESTED)})"
    return None
