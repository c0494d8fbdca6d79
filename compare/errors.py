"""The user-error class and its one-line messages, a leaf every layer may import (no compare import)."""

from __future__ import annotations


class SuiteError(Exception):
    """A problem with a suite file (or with what it asks of this machine), said in one line."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, for a one-line error ("(no message)" if it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else "(no message)"
