"""Post-import hook: patch the host modules (inference-models' models, inference's adapters) as soon as they are imported.

Standard library only: the start-up ``.pth`` file imports this in every process where
``RFDETR_USE_TRITON_PREPROC`` or ``RFDETR_TRITON_FULLPOSTPROC`` is set, long before torch
or inference-models.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

# inference-models' model module -> class whose pre_process / post_process are wrapped, and its backend.
MODEL_TARGETS: dict[str, tuple[str, str]] = {
    "inference_models.models.rfdetr.rfdetr_instance_segmentation_trt": ("RFDetrForInstanceSegmentationTRT", "trt"),
    "inference_models.models.rfdetr.rfdetr_instance_segmentation_onnx": ("RFDetrForInstanceSegmentationOnnx", "onnx"),
    "inference_models.models.rfdetr.rfdetr_instance_segmentation_pytorch": ("RFDetrForInstanceSegmentationTorch", "torch"),
}

# roboflow-workflows' module of the instance-segmentation block whose sv.Detections conversion is wrapped.
WORKFLOWS_TARGET = "roboflow_workflows.core_steps.models.roboflow.instance_segmentation.v3"
# inference's adapters: instance-segmentation response building (post-processing switch).
INFERENCE_ADAPTER_TARGET = "inference.core.models.inference_models_adapters"
# inference's InferencePipeline module: the per-frame function ``init(model_id=...)`` binds.
PIPELINE_TARGET = "inference.core.interfaces.legacy_stream.inference_pipeline"

# Every host module patched on import -> the plugin module (surface) that patches it.
TARGETS: dict[str, str] = {
    **{name: "models" for name in MODEL_TARGETS},
    WORKFLOWS_TARGET: "workflows",
    INFERENCE_ADAPTER_TARGET: "inference_adapter",
    PIPELINE_TARGET: "pipeline",
}

# (owner module, class name) of every RF-DETR instance-segmentation class served.
_RFDETR_SEG_CLASSES = frozenset((module, name) for module, (name, _backend) in MODEL_TARGETS.items())


def is_rfdetr_segmentation(model: Any) -> bool:
    """Whether ``model`` is (a subclass of) one of inference-models' RF-DETR instance-segmentation classes."""
    return any((cls.__module__, cls.__qualname__) in _RFDETR_SEG_CLASSES for cls in type(model).__mro__)


class _Loader(importlib.abc.Loader):
    """Runs the real loader, then the callback on the freshly executed module."""

    def __init__(self, loader: importlib.abc.Loader, callback: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._callback = callback

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._callback(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class PostImportFinder(importlib.abc.MetaPathFinder):
    """Meta-path finder that wraps the loaders of :data:`TARGETS` modules."""

    def __init__(self, callback: Callable[[ModuleType], None]) -> None:
        self.callback = callback

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in TARGETS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader, self.callback)
        return spec


_lock = threading.RLock()
_finder: PostImportFinder | None = None


def register(callback: Callable[[ModuleType], None]) -> None:
    """Call ``callback(module)`` for each target module: now if imported, else on import."""
    global _finder
    with _lock:
        if _finder is None:
            _finder = PostImportFinder(callback)
            sys.meta_path.insert(0, _finder)
        else:
            _finder.callback = callback
        for name in TARGETS:
            module = sys.modules.get(name)
            if module is not None:
                callback(module)


def unregister() -> None:
    """Stop patching modules imported from now on."""
    global _finder
    with _lock:
        if _finder is not None:
            sys.meta_path.remove(_finder)
            _finder = None


def activate_from_env() -> None:
    """Start-up entry point: install the backend when a patched host module gets imported.

    The variable is validated then (inside :func:`inference_triton_preproc.install`),
    so a bad value fails the import of the adapters with a message naming it rather
    than the start of every Python process.
    """

    def on_import(module: ModuleType) -> None:
        from . import install_from_env

        install_from_env()

    register(on_import)
