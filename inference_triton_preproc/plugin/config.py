"""Environment variables that control the backend (read when it is installed).

| variable | values | default |
|---|---|---|
| ``RFDETR_USE_TRITON_PREPROC`` | ``1/true/yes/on`` enable, ``0/false/no/off`` disable | off |
| ``RFDETR_TRITON_PREPROC_MODE`` | ``auto``, ``pil``, ``cv2``, ``torch`` | ``auto`` |
| ``RFDETR_TRITON_PREPROC_STRICT`` | boolean as above: raise instead of falling back | off |

Any other value is an error that names the variable and the accepted values: a typo
never turns the backend silently off. Standard library only (the start-up hook uses it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ENABLE_VAR = "RFDETR_USE_TRITON_PREPROC"
MODE_VAR = "RFDETR_TRITON_PREPROC_MODE"
STRICT_VAR = "RFDETR_TRITON_PREPROC_STRICT"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
MODES = ("auto", "pil", "cv2", "torch")


def env_flag(name: str, default: bool = False) -> bool:
    """A boolean environment variable; unset or empty means ``default``.

    Raises:
        ValueError: the value is not one of the accepted spellings.
    """
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    accepted = "/".join(_TRUE) + " to enable or " + "/".join(_FALSE) + " to disable"
    raise ValueError(f"{name}={os.environ[name]!r} is not valid: use {accepted}")


def env_mode() -> str:
    """``RFDETR_TRITON_PREPROC_MODE``, lower-cased; ``auto`` when unset."""
    raw = os.environ.get(MODE_VAR, "").strip().lower() or "auto"
    if raw not in MODES:
        raise ValueError(f"{MODE_VAR}={os.environ[MODE_VAR]!r} is not valid: use one of {', '.join(MODES)}")
    return raw


@dataclass(frozen=True)
class Settings:
    """What the environment asks for.

    ``enabled``: route adapters through the kernels; ``mode``: which reference to
    reproduce (``auto`` detects it from the installed inference-models); ``strict``:
    raise :class:`~inference_triton_preproc.plugin.FallbackError` instead of falling back.
    """

    enabled: bool
    mode: str
    strict: bool

    @classmethod
    def from_env(cls) -> Settings:
        return cls(enabled=env_flag(ENABLE_VAR), mode=env_mode(), strict=env_flag(STRICT_VAR))
