"""Build hook: ship the start-up ``.pth`` file at the root of the wheel.

A ``.pth`` file in site-packages runs its ``import`` line at interpreter start-up; ours
imports a small module that activates the backend only when ``RFDETR_USE_TRITON_PREPROC``
is set. Editable installs need it too, hence both build-data keys.
"""

from __future__ import annotations

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PTH = "inference_triton_preproc.pth"


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        key = "force_include_editable" if version == "editable" else "force_include"
        build_data.setdefault(key, {})[PTH] = PTH
