"""Argument checks shared by the networks' constructors."""

from __future__ import annotations

from typing import Any

__all__ = ["require_bool"]


def require_bool(value: Any, name: str) -> bool:
    """``value`` if it is a real bool, else TypeError: on the command line ``--flag false`` arrives as the string
    ``'false'`` (Python Fire keeps lowercase words as strings), which would otherwise silently mean True."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False (Python literals on the command line), got {value!r}")
    return value
