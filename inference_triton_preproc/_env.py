"""Parsing of the package's environment variables: the floor under ``runtime`` and ``plugin``.

Standard library only (the start-up hook imports it). Every value outside a variable's
accepted set is a ``ValueError`` naming the variable and what it accepts: a typo never
turns a switch silently off.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def parse_flag(name: str, raw: str | None, default: bool = False) -> bool:
    """``raw`` (the value of variable ``name``) as a boolean; None or blank means ``default``.

    Raises:
        ValueError: the value is not one of the accepted spellings.
    """
    value = (raw or "").strip().lower()
    if not value:
        return default
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    accepted = "/".join(TRUE) + " to enable or " + "/".join(FALSE) + " to disable"
    raise ValueError(f"{name}={raw!r} is not valid: use {accepted}")


def env_flag(name: str, default: bool = False) -> bool:
    """The boolean environment variable ``name``; unset or blank means ``default``.

    Raises:
        ValueError: the value is not one of the accepted spellings.
    """
    return parse_flag(name, os.environ.get(name), default)


def parse_choice(name: str, raw: str | None, choices: Sequence[str], default: str) -> str:
    """``raw`` (the value of variable ``name``) lower-cased, one of ``choices``; None or blank means ``default``.

    Raises:
        ValueError: the value is not one of ``choices``.
    """
    value = (raw or "").strip().lower() or default
    if value not in choices:
        raise ValueError(f"{name}={raw!r} is not valid: use one of {', '.join(choices)}")
    return value


def env_choice(name: str, choices: Sequence[str], default: str) -> str:
    """The environment variable ``name`` as one of ``choices`` (see :func:`parse_choice`)."""
    return parse_choice(name, os.environ.get(name), choices, default)
