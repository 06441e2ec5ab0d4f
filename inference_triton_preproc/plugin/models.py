"""Surface ``models``: inference-models' RF-DETR instance-segmentation classes.

``pre_process`` is wrapped under the preprocessing switch (:mod:`.adapters`),
``post_process`` under the post-processing switch (:mod:`.postprocess`).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from . import _hook
from .config import Settings

HOST = "inference-models"


def patch(module: ModuleType, settings: Settings, current: Callable[[], Settings]) -> list[tuple[type, str, Callable]]:
    """The wrappers for the model class of ``module`` that ``settings`` switch on."""
    class_name, backend = _hook.MODEL_TARGETS[module.__name__]
    cls = getattr(module, class_name)
    patches = []
    if settings.enabled:
        from .adapters import make_wrapper

        patches.append((cls, "pre_process", make_wrapper(cls.__dict__["pre_process"], backend, current)))
    if settings.postprocess:
        from .postprocess import make_wrapper as make_postprocess_wrapper

        patches.append((cls, "post_process", make_postprocess_wrapper(cls.__dict__["post_process"], backend, current)))
    return patches
