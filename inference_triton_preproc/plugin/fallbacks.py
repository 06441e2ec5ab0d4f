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

Pipeline surface (:mod:`.pipeline`): ``"pipeline"``, one per frame of
``InferencePipeline.init(model_id=...)`` dumped without ``Point`` objects.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable

_COUNTS_LOCK = threading.Lock()
_COUNTS: dict[str, int] = {}
_LOGGED_LOCK = threading.Lock()


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


def fall_back(
    key: str,
    *,
    strict: bool,
    logged: set[Hashable],
    once: Hashable,
    logger: logging.Logger,
    message: str,
    error_message: str,
    error: BaseException | None = None,
) -> None:
    """What every surface does when a call goes to the host's own code.

    Counts ``key``; in strict mode raises :class:`FallbackError` with ``error_message``
    (chained to ``error``); otherwise logs ``message`` at INFO the first time ``once``
    enters ``logged`` (the caller's set: per model, per adapter or per process).
    """
    count(key)
    if strict:
        raise FallbackError(error_message) from error
    with _LOGGED_LOCK:
        first = once not in logged
        logged.add(once)
    if first:
        logger.info("%s", message)
