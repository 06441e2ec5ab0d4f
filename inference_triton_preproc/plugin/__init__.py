"""Activation of the backend inside the host packages: ``install()``, ``uninstall()``, ``is_installed()``.

``install()`` patches each host surface (see :data:`._hook.TARGETS`) now for modules
already imported and at import time for the others; ``uninstall()`` restores every
original attribute. Both are idempotent and thread-safe. The surfaces:

* ``models``: ``pre_process`` (preprocessing switch) of inference-models' RF-DETR
  instance-segmentation classes (TRT, ONNX, Torch), and the stock post-processing
  functions their ``post_process`` calls (post-processing switch).
* ``workflows`` (post-processing switch): roboflow-workflows' instance-segmentation
  block's conversion of RF-DETR responses to ``sv.Detections``.
* ``inference_adapter``: response building of inference's
  ``InferenceModelsInstanceSegmentationAdapter`` (post-processing switch).
* ``pipeline``: the per-frame function of inference's ``InferencePipeline.init(model_id=...)``,
  whose dumped responses it completes from polygons instead of ``Point`` objects
  (post-processing switch).

With ``RFDETR_USE_TRITON_PREPROC=1`` or ``RFDETR_TRITON_FULLPOSTPROC=1`` the installed
start-up hook calls :func:`install_from_env` on its own, so no code change is needed.
Environment variables: see :mod:`inference_triton_preproc.plugin.config`; supported host
versions: :mod:`inference_triton_preproc.plugin.package`.
"""

from __future__ import annotations

import importlib
import logging
import threading
from types import ModuleType
from typing import Any

from .._env import ConfigurationError, check_environment
from . import _hook
from .config import GC_FREEZE_VAR, MODES, POSTPROC_VAR, STRICT_VAR, Settings, env_flag, env_mode

__all__ = ["FallbackError", "call_counts", "install", "install_from_env", "is_installed", "uninstall"]

logger = logging.getLogger(__name__)

_lock = threading.RLock()
_settings: Settings | None = None
# (owner, attribute) -> the host's original value, restored by uninstall().
_originals: dict[tuple[object, str], Any] = {}
_skipped_hosts: set[str] = set()
# Surfaces (module names of this package's plugin) that have patched their host.
_patched_surfaces: set[str] = set()

# A surface's patch(module, settings, current_settings) returns the (owner, attribute,
# replacement) triples to apply (owner: a class or a module); its HOST names the
# distribution whose range gates it.


def __getattr__(name: str) -> Any:
    if name in ("FallbackError", "call_counts"):
        from . import fallbacks

        return getattr(fallbacks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _current_settings() -> Settings:
    assert _settings is not None
    return _settings


def _patch(module: ModuleType) -> None:
    from .package import unsupported_reason

    name = _hook.TARGETS[module.__name__]
    surface = importlib.import_module(f".{name}", __name__)
    with _lock:
        if _settings is None:
            return
        reason = unsupported_reason(host=surface.HOST)
        if reason is not None:
            if surface.HOST not in _skipped_hosts:
                _skipped_hosts.add(surface.HOST)
                logger.warning("inference-triton-preproc leaves %s unpatched: %s", module.__name__, reason)
            return
        for owner, attribute, replacement in surface.patch(module, _settings, _current_settings):
            if (owner, attribute) in _originals:
                continue
            _originals[(owner, attribute)] = owner.__dict__[attribute]
            setattr(owner, attribute, replacement)
            _patched_surfaces.add(name)
            logger.debug("wrapped %s.%s", getattr(owner, "__qualname__", owner.__name__), attribute)


def surface_patched(name: str) -> bool:
    """Whether the surface ``name`` (``"models"``, ``"workflows"``, ``"inference_adapter"``, ``"pipeline"``) has patched its host now."""
    return name in _patched_surfaces


def install(
    mode: str | None = None,
    strict: bool | None = None,
    postprocess: bool | None = None,
    *,
    preprocess: bool = True,
    gc_freeze: bool | None = None,
) -> bool:
    """Route the RF-DETR segmentation path through the kernels.

    Args:
        mode: ``"auto"`` (detect the host's reference), ``"pil"``, ``"cv2"`` or
            ``"torch"``; None reads ``RFDETR_TRITON_PREPROC_MODE``.
        strict: raise ``FallbackError`` instead of falling back to the stock path (both
            switches); None reads ``RFDETR_TRITON_PREPROC_STRICT``.
        postprocess: serve post-processing on the GPU, up to inference's responses;
            None reads ``RFDETR_TRITON_FULLPOSTPROC``.
        preprocess: serve preprocessing with the fused kernel.
        gc_freeze: after the first call the adapter serves, keep everything loaded out
            of Python's full garbage collections (:mod:`..runtime.heap`; needs
            ``postprocess``); None reads ``RFDETR_TRITON_GC_FREEZE``.

    Returns:
        True when installed (or already installed); False when the installed
        inference-models version is outside the supported range (the reason is logged).

    Raises:
        ValueError: an invalid argument or environment value.
    """
    from .package import unsupported_reason

    global _settings
    check_environment()
    mode = env_mode() if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    strict = env_flag(STRICT_VAR) if strict is None else bool(strict)
    postprocess = env_flag(POSTPROC_VAR) if postprocess is None else bool(postprocess)
    gc_freeze = env_flag(GC_FREEZE_VAR) if gc_freeze is None else bool(gc_freeze)
    _check_gc_freeze(gc_freeze, postprocess)
    with _lock:
        reason = unsupported_reason()
        if reason is not None:
            logger.warning("inference-triton-preproc not installed: %s", reason)
            return False
        settings = Settings(enabled=bool(preprocess), mode=mode, strict=strict, postprocess=postprocess, gc_freeze=gc_freeze)
        if _settings == settings:
            return True
        if _settings is not None:
            # Different switches patch different attributes: start again from the host's own.
            uninstall()
        _settings = settings
        _hook.register(_patch)
    return True


def install_from_env() -> bool:
    """Install what ``RFDETR_USE_TRITON_PREPROC`` / ``RFDETR_TRITON_FULLPOSTPROC`` enable; what the start-up hook calls.

    Raises:
        ValueError: a variable holds a value outside its accepted set.
    """
    settings = Settings.from_env()
    _check_gc_freeze(settings.gc_freeze, settings.postprocess)
    if not (settings.enabled or settings.postprocess):
        return False
    return install(settings.mode, settings.strict, settings.postprocess, preprocess=settings.enabled, gc_freeze=settings.gc_freeze)


def _check_gc_freeze(gc_freeze: bool, postprocess: bool) -> None:
    # The freeze happens in the post-processing surface: on its own it would do nothing.
    if gc_freeze and not postprocess:
        raise ConfigurationError(f"{GC_FREEZE_VAR} (gc_freeze) needs {POSTPROC_VAR} (postprocess) on")


def uninstall() -> None:
    """Restore every patched attribute and stop patching new imports."""
    global _settings
    with _lock:
        _hook.unregister()
        for (owner, attribute), original in _originals.items():
            setattr(owner, attribute, original)
        _originals.clear()
        _skipped_hosts.clear()
        _patched_surfaces.clear()
        _settings = None


def is_installed() -> bool:
    """Whether the backend is installed in this process."""
    with _lock:
        return _settings is not None
