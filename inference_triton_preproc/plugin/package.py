"""The host versions the plugin supports, in one place.

Each patched host package has one supported range. Outside it the plugin patches
nothing of that host and logs why; the other hosts are patched as usual.

| host | patched surface | supported | tested |
|---|---|---|---|
| inference-models | RF-DETR segmentation models' ``pre_process`` / ``post_process`` | >=0.39.0,<0.40 | 0.39.5 |
| inference | ``InferenceModelsInstanceSegmentationAdapter`` response building; ``InferencePipeline``'s ``default_process_frame`` | >=1.8.0,<1.9 | 1.8.3 |
| roboflow-workflows | instance-segmentation model block's conversion to ``sv.Detections`` | >=0.2.13,<0.3 | 0.2.13 |
| supervision | (read by the workflows surface) | >=0.25,<0.31 | 0.30.9 |
"""

from __future__ import annotations

from importlib import metadata

from packaging.specifiers import SpecifierSet
from packaging.version import Version

HOST = "inference-models"

# host distribution -> (supported range, versions tested)
HOSTS: dict[str, tuple[SpecifierSet, tuple[str, ...]]] = {
    "inference-models": (SpecifierSet(">=0.39.0,<0.40"), ("0.39.5",)),
    "inference": (SpecifierSet(">=1.8.0,<1.9"), ("1.8.3",)),
    "roboflow-workflows": (SpecifierSet(">=0.2.13,<0.3"), ("0.2.13",)),
    "supervision": (SpecifierSet(">=0.25,<0.31"), ("0.30.9",)),
}
SUPPORTED, TESTED = HOSTS[HOST]


def host_version(host: str = HOST) -> str | None:
    """The installed version of ``host`` (a distribution name), or None when it is not installed."""
    try:
        return metadata.version(host)
    except metadata.PackageNotFoundError:
        return None


def unsupported_reason(version: str | None = None, host: str = HOST) -> str | None:
    """Why the installed (or given) version of ``host`` cannot be patched, or None when it can.

    Raises:
        KeyError: ``host`` is not one of :data:`HOSTS`.
    """
    supported, tested = HOSTS[host]
    version = host_version(host) if version is None else version
    if version is None:
        return f"{host} is not installed"
    if Version(version) not in supported:
        return f"{host} {version} is outside the supported range {supported} (tested: {', '.join(tested)})"
    return None
