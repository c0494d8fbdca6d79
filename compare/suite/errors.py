"""One-line errors about a suite file: `file: key.path: what is wrong`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from compare.errors import SuiteError, first_line  # noqa: F401  (the suite's errors, re-exported)


def error_at(loc: tuple[str, ...], message: str, value: Any, title: str = "Suite") -> ValidationError:
    """A validation error at `loc` under the validated field (raised in a validator, pydantic prefixes it)."""
    detail = InitErrorDetails(
        type=PydanticCustomError("suite", "{message}", {"message": message}), loc=loc, input=value
    )
    return ValidationError.from_exception_data(title, [detail])


def _loc(error: dict) -> str:
    return ".".join(str(p) for p in error["loc"]) or "(top level)"


def one_line(path: Path | str, err: ValidationError, prefix: str = "") -> SuiteError:
    """The first of a validation error's problems as `path: key.path: message` (and how many more)."""
    e = err.errors()[0]
    where = ".".join(p for p in (prefix, _loc(e)) if p)
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif e["type"] == "missing":
        msg = "required key is missing"
    elif "input" in e and not isinstance(e["input"], dict | list) and not msg.startswith(f"{e['input']!r} "):
        msg = f"{msg} (got {e['input']!r})"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return SuiteError(f"{path}: {where}: {msg}{more}")
