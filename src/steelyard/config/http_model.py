"""The `http:` part of the config contract: listeners, routes and their upstream settings.

Upstream settings (timeouts, retries) can be set on a listener and overridden per route, as
nginx does with `proxy_*` directives at server and location level: a route field left out
(None) takes the listener's value. `resolve()` turns a route into the settings it runs with.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from steelyard.config.shared import (
    Address,
    Duration,
    Name,
    Size,
    Strict,
    Timeout,
    parse_status_ranges,
)
from steelyard.config.tls_model import TlsCert, TlsConfig

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# RFC 9110 token characters: what a method or a header name may contain.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")


def _header_name(name: str) -> str:
    if not _TOKEN.match(name):
        raise ValueError(f"{name!r} is not a valid header name")
    return name


def _header_map(value: dict[str, str]) -> dict[str, str]:
    for name, v in value.items():
        _header_name(name)
        if not isinstance(v, str) or not _HEADER_VALUE.match(v):
            raise ValueError(f"header {name}: value must be text without control characters")
    return value


class ReturnAction(Strict):
    status: int = Field(200, ge=200, le=599)
    body: str = ""
    content_type: str = "text/plain"


class RedirectAction(Strict):
    status: Literal[301, 302, 303, 307, 308] = 302
    location: str = Field(min_length=1)


class LimitReq(Strict):
    """Leaky bucket per key, as nginx limit_req: `rate` requests per second, `burst` extra."""

    rate: float = Field(gt=0)
    burst: int = Field(0, ge=0)
    key: str = "source"

    @field_validator("rate", mode="before")
    @classmethod
    def _rate(cls, v: object) -> float:
        if isinstance(v, str):
            m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|m)\s*", v)
            if not m:
                raise ValueError("rate must look like 100/s or 30/m")
            return float(m.group(1)) / (60.0 if m.group(2) == "m" else 1.0)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError("rate must look like 100/s or 30/m")
        return float(v)

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        return _check_key(v, ("source",), ("header:",))


class LimitConn(Strict):
    max: int = Field(ge=1)
    key: str = "source"

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        return _check_key(v, ("source",), ("header:",))


class Sticky(Strict):
    cookie: str = Field(min_length=1, pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
    path: str = "/"
    max_age: Duration | None = None
    http_only: bool = True
    secure: bool = False


def _check_key(v: str, words: tuple[str, ...], prefixes: tuple[str, ...]) -> str:
    if v in words:
        return v
    for prefix in prefixes:
        if v.startswith(prefix) and _TOKEN.match(v[len(prefix) :] or "-bad-"):
            return v
    allowed = " | ".join([*words, *(p + "NAME" for p in prefixes)])
    raise ValueError(f"key must be one of {allowed}, got {v!r}")


class UpstreamSettings(Strict):
    """Settings for talking to servers; on a route, None means "as the listener says"."""

    connect_timeout: Timeout | None = None
    read_timeout: Timeout | None = None
    send_timeout: Timeout | None = None
    tries: int | None = Field(None, ge=1, le=100)
    tries_timeout: Duration | None = None  # 0 = no limit
    retry_on: list[int] | None = None
    retry_non_idempotent: bool | None = None
    retry_buffer: Size | None = None
    tunnel_timeout: Timeout | None = None
    upstream_tls: bool | None = None
    verify: bool | None = None
    ca: str | None = None  # CA file to verify servers with, instead of the system's
    sni: str | None = None

    @field_validator("retry_on")
    @classmethod
    def _statuses(cls, v: list[int] | None) -> list[int] | None:
        if v is not None:
            for code in v:
                if not 500 <= code <= 599 and code not in (408, 425, 429):
                    raise ValueError(f"retry_on: {code} is not a retryable status (5xx, 408, 429)")
        return v


LISTENER_UPSTREAM_DEFAULTS: dict[str, object] = {
    "connect_timeout": 3.0,
    "read_timeout": 60.0,
    "send_timeout": 60.0,
    "tries": 2,
    "tries_timeout": 0.0,
    "retry_on": [502, 503, 504],
    "retry_non_idempotent": False,
    "retry_buffer": 64 * 1024,
    "tunnel_timeout": 3600.0,
    "upstream_tls": False,
    "verify": True,
    "ca": None,
    "sni": None,
}


class Route(UpstreamSettings):
    host: str | None = None
    path: str | None = None
    path_regex: str | None = None
    methods: list[str] | None = None
    headers: dict[str, str] | None = None
    pool: str | None = None
    return_: ReturnAction | None = Field(None, alias="return")
    redirect: RedirectAction | None = None
    redirect_https: bool = False
    strip_prefix: str | None = None
    add_prefix: str | None = None
    hash_key: str | None = None
    sticky: Sticky | None = None
    set_request_headers: dict[str, str] = Field(default_factory=dict)
    remove_request_headers: list[str] = Field(default_factory=list)
    set_response_headers: dict[str, str] = Field(default_factory=dict)
    remove_response_headers: list[str] = Field(default_factory=list)
    limit_req: LimitReq | None = None
    limit_conn: LimitConn | None = None

    model_config = Strict.model_config | {"populate_by_name": True, "serialize_by_alias": True}

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is None:
            return v
        name = v[2:] if v.startswith("*.") else v
        if not re.fullmatch(r"[A-Za-z0-9.-]+", name):
            raise ValueError("host must be a name like example.com or *.example.com")
        return v.lower()

    @field_validator("path", "strip_prefix", "add_prefix")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or any(c in v for c in " \r\n\t?#")):
            raise ValueError("must start with / and contain no spaces, ? or #")
        return v

    @field_validator("path_regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"bad regular expression: {exc}") from None
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            for m in v:
                if not _TOKEN.match(m):
                    raise ValueError(f"{m!r} is not a method name")
            return [m.upper() for m in v]
        return v

    @field_validator("headers", "set_request_headers", "set_response_headers")
    @classmethod
    def _header_values(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return None if v is None else _header_map(v)

    @field_validator("remove_request_headers", "remove_response_headers")
    @classmethod
    def _header_names(cls, v: list[str]) -> list[str]:
        return [_header_name(n) for n in v]

    @field_validator("hash_key")
    @classmethod
    def _hash_key(cls, v: str | None) -> str | None:
        if v is None:
            return v
        return _check_key(v, ("source", "uri"), ("header:", "cookie:"))

    @model_validator(mode="after")
    def _one_action(self) -> Route:
        actions = [
            name
            for name, set_ in (
                ("pool", self.pool is not None),
                ("return", self.return_ is not None),
                ("redirect", self.redirect is not None),
                ("redirect_https", self.redirect_https),
            )
            if set_
        ]
        if len(actions) != 1:
            found = ", ".join(actions) or "none"
            raise ValueError(
                f"a route needs exactly one of pool, return, redirect, redirect_https "
                f"(found: {found})"
            )
        if self.path is not None and self.path_regex is not None:
            raise ValueError("use path or path_regex, not both")
        if self.strip_prefix is not None and self.pool is None:
            raise ValueError("strip_prefix only applies to routes with a pool")
        return self


class HttpListenerConfig(UpstreamSettings):
    name: Name
    listen: Address
    routes: list[Route] = Field(default_factory=list)
    tls: TlsConfig | None = None
    # client side
    client_header_timeout: Timeout = 10.0
    client_body_timeout: Timeout = 60.0
    keepalive_timeout: Duration = 75.0  # idle client connections; 0 = no keep-alive
    keepalive_requests: int = Field(1000, ge=1)
    max_header_bytes: Size = 32 * 1024
    max_uri_bytes: Size = 8 * 1024
    max_body_bytes: Size = 0  # 0 = no limit
    max_conns: int = Field(0, ge=0)  # 0 = no limit
    backlog: int = Field(1024, ge=1)
    # server side, per server per worker
    upstream_keepalive: int = Field(32, ge=0)
    upstream_keepalive_timeout: Duration = 60.0
    upstream_keepalive_requests: int = Field(1000, ge=1)
    # headers
    forwarded: bool = False  # RFC 7239 Forwarded, besides X-Forwarded-*
    via: bool = True
    request_id: bool = True
    server_header: str | None = None
    limit_req: LimitReq | None = None
    limit_conn: LimitConn | None = None
    access_log: AccessLog | None = None

    @model_validator(mode="after")
    def _defaults(self) -> HttpListenerConfig:
        for key, value in LISTENER_UPSTREAM_DEFAULTS.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        return self

    def resolve(self, route: Route) -> dict[str, object]:
        """The upstream settings a route runs with: its own, else the listener's."""
        out: dict[str, object] = {}
        for key in LISTENER_UPSTREAM_DEFAULTS:
            value = getattr(route, key)
            out[key] = getattr(self, key) if value is None else value
        return out


class AccessLog(Strict):
    path: str
    format: Literal["combined", "json"] = "combined"


HttpListenerConfig.model_rebuild()

__all__ = [
    "IDEMPOTENT",
    "AccessLog",
    "HttpListenerConfig",
    "LimitConn",
    "LimitReq",
    "RedirectAction",
    "ReturnAction",
    "Route",
    "Sticky",
    "TlsCert",
    "TlsConfig",
    "UpstreamSettings",
    "parse_status_ranges",
]
