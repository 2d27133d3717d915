"""Errors whose fix reads differently on the command line and in Python.

An error raised by the library names the fix in Python terms (``device='cpu'``); the command line shows
``cli_message`` instead where the error carries one (``--device cpu``).
"""

from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound=BaseException)


def with_cli_message(error: E, message: str) -> E:
    """``error``, shown on the command line as ``message``."""
    error.cli_message = message  # type: ignore[attr-defined]
    return error


def cli_message(error: BaseException) -> str:
    """What the command line shows for ``error``: its ``cli_message`` where it has one, else its text."""
    return str(getattr(error, "cli_message", None) or error)
