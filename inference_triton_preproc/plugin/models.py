"""Surface ``models``: inference-models' RF-DETR instance-segmentation model modules.

Under the preprocessing switch the class's ``pre_process`` is wrapped (:mod:`.adapters`);
under the post-processing switch the two stock functions its ``post_process`` calls are
wrapped inside the module (:mod:`.postprocess` says why there).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from . import _hook
from .config import Settings

HOST = "inference-models"


def patch(module: ModuleType, settings: Settings, current: Callable[[], Settings]) -> list[tuple[object, str, Callable]]:
    """The wrappers for the model module ``module`` that ``settings`` switch on."""
    class_name, backend = _hook.MODEL_TARGETS[module.__name__]
    cls = getattr(module, class_name)
    patches = []
    if settings.enabled:
        from .adapters import make_wrapper

        patches.append((cls, "pre_process", make_wrapper(cls.__dict__["pre_process"], backend, current)))
    if settings.postprocess:
        from .postprocess import patches as postprocess_patches

        patches.extend(postprocess_patches(module, current))
    return patches
