"""Activation of the backend inside inference-models: ``install()``, ``uninstall()``, ``is_installed()``.

``install()`` wraps ``pre_process`` of the RF-DETR instance-segmentation adapters
(TRT, ONNX, Torch) of the installed inference-models, now for modules already imported
and at import time for the others. ``uninstall()`` restores the original methods.
Both are idempotent and thread-safe. With ``RFDETR_USE_TRITON_PREPROC=1`` the
installed start-up hook calls :func:`install_from_env` on its own, so no code change
is needed. Environment variables: see :mod:`inference_triton_preproc.plugin.config`.
"""

from __future__ import annotations

import logging
import threading
from types import ModuleType
from typing import Any

from .._env import check_environment
from . import _hook
from .config import MODES, Settings, env_flag, env_mode

__all__ = ["FallbackError", "call_counts", "install", "install_from_env", "is_installed", "uninstall"]

logger = logging.getLogger(__name__)

_lock = threading.RLock()
_settings: Settings | None = None
_originals: dict[type, Any] = {}


def __getattr__(name: str) -> Any:
    if name in ("FallbackError", "call_counts"):
        from . import adapters

        return getattr(adapters, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _current_settings() -> Settings:
    assert _settings is not None
    return _settings


def _patch(module: ModuleType) -> None:
    from .adapters import make_wrapper

    class_name, backend = _hook.TARGETS[module.__name__]
    cls = getattr(module, class_name)
    with _lock:
        if _settings is None or cls in _originals:
            return
        original = cls.__dict__["pre_process"]
        _originals[cls] = original
        cls.pre_process = make_wrapper(original, backend, _current_settings)
        logger.debug("wrapped %s.pre_process", cls.__qualname__)


def install(mode: str | None = None, strict: bool | None = None) -> bool:
    """Route the RF-DETR segmentation adapters' preprocessing through the kernels.

    Args:
        mode: ``"auto"`` (detect the host's reference), ``"pil"``, ``"cv2"`` or
            ``"torch"``; None reads ``RFDETR_TRITON_PREPROC_MODE``.
        strict: raise ``FallbackError`` instead of falling back to the stock path;
            None reads ``RFDETR_TRITON_PREPROC_STRICT``.

    Returns:
        True when installed (or already installed); False when the installed
        inference-models version is outside the supported range (the reason is logged).

    Raises:
        ValueError: an invalid ``mode``/``strict`` or environment value.
    """
    from .package import unsupported_reason

    global _settings
    check_environment()
    mode = env_mode() if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    strict = env_flag("RFDETR_TRITON_PREPROC_STRICT") if strict is None else bool(strict)
    with _lock:
        reason = unsupported_reason()
        if reason is not None:
            logger.warning("inference-triton-preproc not installed: %s", reason)
            return False
        _settings = Settings(enabled=True, mode=mode, strict=strict)
        _hook.register(_patch)
    return True


def install_from_env() -> bool:
    """Install when ``RFDETR_USE_TRITON_PREPROC`` enables it; what the start-up hook calls.

    Raises:
        ValueError: a variable holds a value outside its accepted set.
    """
    settings = Settings.from_env()
    if not settings.enabled:
        return False
    return install(settings.mode, settings.strict)


def uninstall() -> None:
    """Restore the original ``pre_process`` methods and stop patching new imports."""
    global _settings
    with _lock:
        _hook.unregister()
        for cls, original in _originals.items():
            cls.pre_process = original
        _originals.clear()
        _settings = None


def is_installed() -> bool:
    """Whether the backend is installed in this process."""
    with _lock:
        return _settings is not None
