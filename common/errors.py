"""Errors raised for bad user input: always name the offending file (or item) and the problem."""

from __future__ import annotations

from os import PathLike


class InputDataError(ValueError):
    """Bad input data: missing/corrupt file, NaN/Inf, wrong dimensions, missing tags or metadata, mismatched pairs.

    The message always starts with the source (file path or datalist item) so users know what to fix.
    """

    def __init__(self, source: str | PathLike | None, problem: str) -> None:
        self.source = None if source is None else str(source)
        self.problem = problem
        prefix = f"{self.source}: " if self.source else ""
        super().__init__(prefix + problem)
