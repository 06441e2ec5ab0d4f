"""Whether an arm exercised the switches its environment turned on.

Two arms that agree prove nothing when the code under test never ran: a bad variable,
an unsupported model or a failed install makes the plugin fall back on every call, and
the arm then runs the stock path like its baseline. Each arm's sidecar records the
``RFDETR_*`` variables it ran with (``model.preprocessing.flags``) and the plugin's call
counts (``preprocessing_calls``: a count per served path and per fallback reason);
:func:`unexercised_switch` reads both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._env import ConfigurationError, parse_flag
from .dumps import Dump

#: (environment variable, call-count key): an arm that sets the variable on must have
#: served at least one call under the key. A new switch is one more line here.
SWITCHES: tuple[tuple[str, str], ...] = (
    ("RFDETR_USE_TRITON_PREPROC", "kernel"),
    ("RFDETR_TRITON_FULLPOSTPROC", "postprocess"),
    ("RFDETR_TRITON_GC_FREEZE", "gc-freeze"),
)


def _arm_name(dump: Dump) -> str:
    arm = (dump.meta or {}).get("arm") or {}
    name = (arm.get("label") or arm.get("name")) if isinstance(arm, Mapping) else None
    where = str(dump.path) if dump.path is not None else "an in-memory dump"
    return f"{name} ({where})" if name else where


def unexercised_switch(dump: Dump) -> str | None:
    """A one-line reason when ``dump``'s arm turned a switch of :data:`SWITCHES` on but
    served no call through it (naming the arm, the switch and the fallback reasons);
    None when every switch it turned on served calls, or when the dump has no sidecar
    (nothing is known about how it was made)."""
    if dump.meta is None:
        return None
    model: Any = dump.meta.get("model") or {}
    preprocessing: Any = model.get("preprocessing") if isinstance(model, Mapping) else None
    flags: Any = preprocessing.get("flags") if isinstance(preprocessing, Mapping) else None
    calls: Any = dump.meta.get("preprocessing_calls") or {}
    for variable, key in SWITCHES:
        raw = flags.get(variable) if isinstance(flags, Mapping) else None
        try:
            on = parse_flag(variable, raw)
        except ConfigurationError as error:
            return f"{_arm_name(dump)}: {error}"
        served = calls.get(key, 0) if isinstance(calls, Mapping) else 0
        if on and not served:
            fallbacks = {k: v for k, v in calls.items() if k != key} if isinstance(calls, Mapping) else {}
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(fallbacks.items())) or "none recorded"
            return (
                f"{_arm_name(dump)} ran with {variable}={raw} but served no call through it "
                f"(fallbacks: {reasons}); its agreement tests nothing"
            )
    return None
