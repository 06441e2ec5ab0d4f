"""Imported at interpreter start-up by the installed ``inference_triton_preproc.pth``.

With ``RFDETR_USE_TRITON_PREPROC`` unset or empty this does nothing else (standard
library only, well under a millisecond). Otherwise it registers an import hook that
installs the backend as soon as inference-models' RF-DETR segmentation adapters are
imported; torch, triton and inference-models are not imported here.
"""

import os

if os.environ.get("RFDETR_USE_TRITON_PREPROC", "").strip():
    from .plugin import _hook

    _hook.activate_from_env()
