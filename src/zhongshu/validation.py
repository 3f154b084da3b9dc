"""Checks for values that a database would refuse (NaN, NUL characters, deep nesting).

The API uses them as Pydantic validators (a 422 at the edge); the worker protocol uses them
on results arriving over Socket.IO."""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 64


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (\\u0000)")
    return value


def plain_json(value: Any, depth: int = 0) -> Any:
    """Finite numbers only (NaN/Infinity are not JSON), no NUL in strings, bounded depth."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (NaN and Infinity are not JSON)")
    if isinstance(value, str):
        no_nul(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            no_nul(k)
            plain_json(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            plain_json(v, depth + 1)
    return value
