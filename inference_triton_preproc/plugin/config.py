"""Environment variables that control the backend (read when it is installed).

| variable | values | default |
|---|---|---|
| ``RFDETR_USE_TRITON_PREPROC`` | ``1/true/yes/on`` enable, ``0/false/no/off`` disable | off |
| ``RFDETR_TRITON_PREPROC_MODE`` | ``auto``, ``pil``, ``cv2``, ``torch`` | ``auto`` |
| ``RFDETR_TRITON_FULLPOSTPROC`` | boolean as above: exact post-processing on the GPU | off |
| ``RFDETR_TRITON_PREPROC_STRICT`` | boolean as above: raise instead of falling back (both switches) | off |
| ``RFDETR_TRITON_GC_FREEZE`` | boolean as above: after the first frame, keep the loaded heap out of full garbage collections (needs ``RFDETR_TRITON_FULLPOSTPROC``; see :mod:`..runtime.heap`) | off |

Any other value is an error that names the variable and the accepted values: a typo
never turns the backend silently off. Standard library only (the start-up hook uses it).
"""

from __future__ import annotations

from dataclasses import dataclass

from .._env import ENABLE_VAR, GC_FREEZE_VAR, MODE_VAR, MODES, POSTPROC_VAR, STRICT_VAR, env_choice, env_flag

__all__ = ["ENABLE_VAR", "GC_FREEZE_VAR", "MODES", "MODE_VAR", "POSTPROC_VAR", "STRICT_VAR", "Settings", "env_flag", "env_mode"]


def env_mode() -> str:
    """``RFDETR_TRITON_PREPROC_MODE``, lower-cased; ``auto`` when unset."""
    return env_choice(MODE_VAR, MODES, "auto")


@dataclass(frozen=True)
class Settings:
    """What the environment asks for.

    ``enabled``: route the models' preprocessing through the kernels; ``mode``: which
    reference to reproduce (``auto`` detects it from the installed inference-models);
    ``strict``: raise :class:`~inference_triton_preproc.plugin.FallbackError` instead of
    falling back; ``postprocess``: serve post-processing on the GPU, up to the responses;
    ``gc_freeze``: freeze the loaded heap after the first frame the adapter serves.
    """

    enabled: bool
    mode: str
    strict: bool
    postprocess: bool = False
    gc_freeze: bool = False

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            enabled=env_flag(ENABLE_VAR),
            mode=env_mode(),
            strict=env_flag(STRICT_VAR),
            postprocess=env_flag(POSTPROC_VAR),
            gc_freeze=env_flag(GC_FREEZE_VAR),
        )
