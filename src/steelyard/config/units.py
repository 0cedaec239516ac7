"""Parsing of the config's unit-bearing scalars: durations (`500ms`, `2s`, `1m`) and rates."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


MAX_DURATION = 365 * 86400.0
MIN_DURATION = 1e-6


def parse_duration(value: object) -> float:
    """A duration string with a unit -> seconds. Bare 0 is accepted (it needs no unit)."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a string with a unit, like 500ms, 2s or 1m")
    if isinstance(value, int | float) and value == 0:
        return 0.0
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            seconds = float(m.group(1)) * _SCALE[m.group(2)]
            if seconds > MAX_DURATION:
                raise ValueError(f"duration {value!r} is longer than a year")
            if 0 < seconds < MIN_DURATION:
                raise ValueError(f"duration {value!r} is shorter than a microsecond")
            return seconds
    raise ValueError(f"bad duration {value!r}: use a number with a unit, like 500ms, 2s or 1m")


def format_duration(seconds: float) -> str:
    """Seconds -> a duration string that `parse_duration` reads back to the same float.

    The config travels to the workers as JSON through this pair, so it must be exact: `repr`
    gives the shortest string that round-trips, and within the accepted range (a microsecond
    to a year) it only needs a fixed-point fallback for the smallest values.
    """
    if 0 < seconds < 1:
        ms = repr(seconds * 1000).removesuffix(".0")
        if "e" not in ms and float(ms) * _SCALE["ms"] == seconds:
            return ms + "ms"  # the friendlier form, when it reads back exactly
    text = repr(float(seconds))
    if "e" in text:
        text = f"{seconds:.15f}".rstrip("0").rstrip(".")
    return text.removesuffix(".0") + "s"


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB|k|K|m|M|g|G)?\s*$")
_SIZE_SCALE = {
    None: 1,
    "B": 1,
    "k": 1024,
    "K": 1024,
    "KiB": 1024,
    "KB": 1000,
    "m": 1024**2,
    "M": 1024**2,
    "MiB": 1024**2,
    "MB": 1000**2,
    "g": 1024**3,
    "G": 1024**3,
    "GiB": 1024**3,
    "GB": 1000**3,
}


def parse_size(value: object) -> int:
    """A byte size: a plain number, or with a unit (`64KiB`, `1m` as nginx, `10MB`)."""
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string like 64KiB or 1m")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(m.group(1)) * _SIZE_SCALE[m.group(2)]
    raise ValueError(f"bad size {value!r}: use bytes, or a unit as in 64KiB, 1m or 10MB")
