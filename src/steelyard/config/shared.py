"""Field types every part of the config uses: durations, addresses, names, status ranges."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from steelyard.config.units import format_duration, parse_duration, parse_size
from steelyard.core.backend import split_address

Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]


def _check_address(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an address host:port, like 127.0.0.1:8080, got {value!r}")
    split_address(value)
    return value


Address = Annotated[str, BeforeValidator(_check_address)]


def _check_server_address(value: object) -> str:
    address = _check_address(value)
    host, _ = split_address(address)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        # Resolving names per connection would block the data path; a resolver with TTLs
        # belongs to the naming tier. Until then, servers are IP literals.
        raise ValueError(
            f"server address {address!r} must be an IP address (like 127.0.0.1:8080 or [::1]:80)"
        ) from None
    return address


ServerAddress = Annotated[str, BeforeValidator(_check_server_address)]
# A timeout that must pass some time; 0 would expire at once.
Timeout = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    Field(gt=0),
]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=64)]


# A byte count: a number, or a string with a unit (64KiB, 1m as nginx, 10MB).
Size = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


def parse_status_ranges(spec: str) -> list[tuple[int, int]]:
    """`200-299,301` -> [(200, 299), (301, 301)]."""
    ranges: list[tuple[int, int]] = []
    for part in str(spec).split(","):
        m = re.fullmatch(r"\s*(\d{3})\s*(?:-\s*(\d{3}))?\s*", part)
        if not m:
            raise ValueError(f"bad status range {part.strip()!r}: use 200-299 or 200,204")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 100 <= lo <= hi <= 599:
            raise ValueError(f"bad status range {part.strip()!r}")
        ranges.append((lo, hi))
    return ranges
