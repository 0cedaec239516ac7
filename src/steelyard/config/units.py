"""Parsing of the config's unit-bearing scalars: durations (`500ms`, `2s`, `1m`) and rates."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """A duration string with a unit -> seconds. Bare 0 is accepted (it needs no unit)."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a string with a unit, like 500ms, 2s or 1m")
    if isinstance(value, int | float) and value == 0:
        return 0.0
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _SCALE[m.group(2)]
    raise ValueError(f"bad duration {value!r}: use a number with a unit, like 500ms, 2s or 1m")


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"
