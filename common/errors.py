"""Errors caused by the user's input or set-up, and how every entry point reports them: one line, no traceback.

A :class:`UserError` is a problem the user can fix (a bad file, a missing tag, a folder that cannot be written),
as opposed to a bug. Every entry point reports one as a single last line ``error: <file>: <problem>`` and exits
non-zero:

- ``restorezoo ...`` catches it in :func:`restorezoo.cli.main`;
- ``python -m monai.bundle run ...`` cannot be wrapped (MONAI's config runner re-raises every exception as
  ``RuntimeError: Failed to evaluate ConfigExpression``), so each bundle config calls :func:`report_errors_briefly`
  first in ``initialize``: it installs a ``sys.excepthook`` that finds the user error inside MONAI's exception
  chain, and a logging filter that drops the tracebacks MONAI's and ignite's handlers log for it.

Set ``RESTOREZOO_TRACEBACK=1`` to see the full traceback instead (both entry points).
"""

from __future__ import annotations

import logging
import os
import sys
from os import PathLike
from types import TracebackType
from typing import TextIO

__all__ = [
    "InputDataError",
    "MissingFileError",
    "OutputError",
    "TRACEBACK_ENV",
    "UserError",
    "find_user_error",
    "one_line",
    "report_errors_briefly",
    "traceback_requested",
]

TRACEBACK_ENV = "RESTOREZOO_TRACEBACK"


class UserError(Exception):
    """A problem the user can fix; reported as one line naming the file (or item) and the problem."""

    def __init__(self, source: str | PathLike | None, problem: str) -> None:
        self.source = None if source is None else str(source)
        self.problem = problem
        prefix = f"{self.source}: " if self.source else ""
        super().__init__(prefix + problem)


class InputDataError(UserError, ValueError):
    """Bad input data: missing/corrupt file, NaN/Inf, wrong dimensions, implausible units, missing tags or
    metadata, mismatched pairs. The message always starts with the source (file path or datalist item)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the run needs (trained weights, a prerequisite checkpoint) does not exist."""


class OutputError(UserError, OSError):
    """An output cannot be written (folder not writable, output path is the input)."""


def traceback_requested() -> bool:
    """True when ``RESTOREZOO_TRACEBACK`` is set to a non-empty value other than ``0``."""
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


def find_user_error(exc: BaseException | None) -> UserError | None:
    """The first :class:`UserError` in ``exc``'s chain of causes / contexts (MONAI and ignite re-raise wrapped)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def one_line(exc: BaseException) -> str:
    """``error: <message>`` on one line (newlines of the message folded)."""
    return "error: " + " ".join(str(exc).split())


class _DropUserErrorTracebacks(logging.Filter):
    """Drop log records emitted while a :class:`UserError` is being handled (StatsHandler logs the whole traceback,
    ignite logs 'terminating due to exception'); the excepthook prints the one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or traceback_requested():
            return True
        exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return find_user_error(exc) is None


_FILTER = _DropUserErrorTracebacks()
# MONAI's StatsHandler logs the traceback of every engine exception through a logger with its own handler that does
# not propagate to the root (created only when the handler is built, after `initialize`): filter it at the logger.
_OWN_HANDLER_LOGGERS = ("monai.handlers.StatsHandler",)
_previous_hook = None


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    user = find_user_error(exc)
    if user is None or traceback_requested():
        (_previous_hook or sys.__excepthook__)(kind, exc, tb)
        return
    report(user)


def report(exc: BaseException, stream: TextIO | None = None) -> None:
    """Write :func:`one_line` of ``exc`` to ``stream`` (stderr), after flushing stdout so that it is the last line
    on a terminal."""
    sys.stdout.flush()
    stream = stream or sys.stderr
    stream.write(f"{one_line(exc)}\n")
    stream.flush()


def report_errors_briefly() -> bool:
    """Report :class:`UserError` s of this process as one line instead of a traceback (idempotent).

    Installs the ``sys.excepthook`` and the logging filter described in the module docstring, on the handlers the
    bundle's ``logging.conf`` configured. Bundle configs call it first in ``initialize``. Returns True."""
    global _previous_hook
    if sys.excepthook is not _excepthook:
        _previous_hook = sys.excepthook
        sys.excepthook = _excepthook
    handlers = list(logging.getLogger().handlers)
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    for name in _OWN_HANDLER_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    return True
