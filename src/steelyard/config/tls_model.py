"""The `tls:` section shared by listeners that terminate TLS (HTTP, MySQL): certificates (the
first is the default, the others chosen by SNI) and the lowest protocol version accepted."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steelyard.config.shared import Strict


class TlsCert(Strict):
    cert: str
    key: str


class TlsConfig(Strict):
    certs: list[TlsCert] = Field(min_length=1)
    min_version: Literal["1.2", "1.3"] = "1.2"
