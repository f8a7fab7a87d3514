"""The choice between the two parser twins.

`prefork.http._parser` (Cython) runs unless it failed to build or the user asks for the pure
twin (`--parser python` or PREFORK_PARSER=python); `--parser cython` fails loudly when the
extension is missing. Both twins have the same API: RequestParser, Request,
response_head, status_line, and raise the errors of prefork.http.errors.
"""

from __future__ import annotations

import os
from types import ModuleType

from prefork.http import _pyparser

try:
    from prefork.http import _parser as _cparser
except ImportError as exc:  # no compiler at install time, or a broken build
    _cparser = None
    CYTHON_IMPORT_ERROR: str | None = str(exc)
else:
    CYTHON_IMPORT_ERROR = None

CHOICES = ("auto", "cython", "python")


class ParserUnavailable(RuntimeError):
    pass


def cython_available() -> bool:
    return _cparser is not None


def load(choice: str | None = None) -> ModuleType:
    """The parser module for `choice` ('auto', 'cython' or 'python'; None reads
    PREFORK_PARSER, defaulting to 'auto')."""
    if choice is None:
        choice = os.environ.get("PREFORK_PARSER", "auto") or "auto"
    if choice not in CHOICES:
        raise ValueError(f"unknown parser {choice!r} (choose from {', '.join(CHOICES)})")
    if choice == "python":
        return _pyparser
    if _cparser is None:
        if choice == "cython":
            raise ParserUnavailable(f"the Cython parser is not built: {CYTHON_IMPORT_ERROR}")
        return _pyparser
    return _cparser


def name_of(module: ModuleType) -> str:
    return "cython" if module is _cparser and module is not None else "python"
