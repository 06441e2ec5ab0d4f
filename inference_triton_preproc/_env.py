"""Parsing of the package's environment variables: the floor under ``runtime`` and ``plugin``.

Standard library only (the start-up hook imports it). Every value outside a variable's
accepted set is a :class:`ConfigurationError` (a ``ValueError``) naming the variable and
what it accepts: a typo never turns a switch silently off, and callers never mistake it
for a kernel failure to fall back from.

:data:`VARIABLES` declares every variable of the package with its parser;
:func:`check_environment` parses them all at once, so that a bad value is reported
when the backend is installed (and by ``preprocess`` on first use), not deep inside the
first call that happens to read it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class ConfigurationError(ValueError):
    """An environment variable of the package holds a value outside its accepted set."""


def parse_flag(name: str, raw: str | None, default: bool = False) -> bool:
    """``raw`` (the value of variable ``name``) as a boolean; None or blank means ``default``.

    Raises:
        ConfigurationError: the value is not one of the accepted spellings.
    """
    value = (raw or "").strip().lower()
    if not value:
        return default
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    accepted = "/".join(TRUE) + " to enable or " + "/".join(FALSE) + " to disable"
    raise ConfigurationError(f"{name}={raw!r} is not valid: use {accepted}")


def env_flag(name: str, default: bool = False) -> bool:
    """The boolean environment variable ``name``; unset or blank means ``default``.

    Raises:
        ConfigurationError: the value is not one of the accepted spellings.
    """
    return parse_flag(name, os.environ.get(name), default)


def parse_choice(name: str, raw: str | None, choices: Sequence[str], default: str) -> str:
    """``raw`` (the value of variable ``name``) lower-cased, one of ``choices``; None or blank means ``default``.

    Raises:
        ConfigurationError: the value is not one of ``choices``.
    """
    value = (raw or "").strip().lower() or default
    if value not in choices:
        raise ConfigurationError(f"{name}={raw!r} is not valid: use one of {', '.join(choices)}")
    return value


def env_choice(name: str, choices: Sequence[str], default: str) -> str:
    """The environment variable ``name`` as one of ``choices`` (see :func:`parse_choice`)."""
    return parse_choice(name, os.environ.get(name), choices, default)


ENABLE_VAR = "RFDETR_USE_TRITON_PREPROC"
MODE_VAR = "RFDETR_TRITON_PREPROC_MODE"
STRICT_VAR = "RFDETR_TRITON_PREPROC_STRICT"
POSTPROC_VAR = "RFDETR_TRITON_FULLPOSTPROC"
GC_FREEZE_VAR = "RFDETR_TRITON_GC_FREEZE"
INGEST_VAR = "RFDETR_TRITON_PREPROC_INGEST"
GRAPHS_VAR = "RFDETR_TRITON_PREPROC_CUDA_GRAPHS"

MODES = ("auto", "pil", "cv2", "torch")
INGEST_CHOICES = ("auto", "pinned", "pageable", "staging", "chunked")


@dataclass(frozen=True)
class Variable:
    """One environment variable of the package: its name and how a raw value parses
    (``parse(raw)`` with ``raw`` None when unset; raises :class:`ConfigurationError`)."""

    name: str
    parse: Callable[[str | None], object]


def _flag(name: str, default: bool) -> Variable:
    return Variable(name, lambda raw: parse_flag(name, raw, default))


def _choice(name: str, choices: Sequence[str], default: str) -> Variable:
    return Variable(name, lambda raw: parse_choice(name, raw, choices, default))


#: Every variable of the package; a new one is one more line here.
VARIABLES: tuple[Variable, ...] = (
    _flag(ENABLE_VAR, False),
    _choice(MODE_VAR, MODES, "auto"),
    _flag(STRICT_VAR, False),
    _flag(POSTPROC_VAR, False),
    _flag(GC_FREEZE_VAR, False),
    _choice(INGEST_VAR, INGEST_CHOICES, "auto"),
    _flag(GRAPHS_VAR, True),
)


def check_environment() -> None:
    """Parse every variable of :data:`VARIABLES` from the environment.

    Raises:
        ConfigurationError: the first variable, in table order, with an invalid value.
    """
    for variable in VARIABLES:
        variable.parse(os.environ.get(variable.name))
