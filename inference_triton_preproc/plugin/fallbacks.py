"""What every patched surface shares: the call counters and the strict-mode error.

``call_counts()`` keys: ``"kernel"`` (pre_process calls the preprocessing kernel served)
and one key per preprocessing fallback reason; ``"postprocess"`` (post-processing calls
the fused path served) and ``"postprocess:<reason>"`` per post-processing fallback;
``"adapter"`` (inference adapter calls whose responses the ``inference_adapter`` surface
built) and ``"adapter:<reason>"`` per fallback of that surface
(:data:`~inference_triton_preproc.plugin.inference_adapter.FALLBACK_REASONS`).

Workflows surface (:mod:`.workflows`), one count per frame the instance-segmentation
block converts for an RF-DETR segmentation model: ``"workflows"`` (served by the fast
conversion) or one of ``"workflows:model-unresolved"``, ``"workflows:not-a-list"``,
``"workflows:rle"``, ``"workflows:box-only"``, ``"workflows:vertices"``,
``"workflows:non-finite"``, ``"workflows:image-size"`` (the host's conversion ran; see
``workflows.FALLBACK_REASONS``).
"""

from __future__ import annotations

import threading

_COUNTS_LOCK = threading.Lock()
_COUNTS: dict[str, int] = {}


class FallbackError(RuntimeError):
    """Raised instead of falling back when ``RFDETR_TRITON_PREPROC_STRICT=1``."""


def count(key: str) -> None:
    """Add one call to the counter ``key``."""
    with _COUNTS_LOCK:
        _COUNTS[key] = _COUNTS.get(key, 0) + 1


def call_counts() -> dict[str, int]:
    """Calls served in this process, by path: see the module's docstring for the keys."""
    with _COUNTS_LOCK:
        return dict(_COUNTS)
