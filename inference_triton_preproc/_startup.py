"""Imported at interpreter start-up by the installed ``inference_triton_preproc.pth``.

With ``RFDETR_USE_TRITON_PREPROC``, ``RFDETR_TRITON_FULLPOSTPROC`` and
``RFDETR_TRITON_GC_FREEZE`` unset or empty this does nothing else (standard library only, well under a millisecond). Otherwise it
registers an import hook that installs the backend as soon as a patched host module
(inference-models' RF-DETR segmentation models, inference's adapter) is imported; torch,
triton and inference-models are not imported here.
"""

import os

if any(
    os.environ.get(name, "").strip()
    for name in ("RFDETR_USE_TRITON_PREPROC", "RFDETR_TRITON_FULLPOSTPROC", "RFDETR_TRITON_GC_FREEZE")
):
    from .plugin import _hook

    _hook.activate_from_env()
