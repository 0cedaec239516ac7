"""Header rewriting between client and server: hop-by-hop removal, forwarding headers, framing.

A proxy is two HTTP connections, not one: headers that describe a connection (Connection and
the names it lists, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-*) stop here,
and the proxy states its own framing on each side. What it adds for the server (X-Forwarded-*,
X-Real-IP, Forwarded, Via, X-Request-ID) follows nginx's common configuration and RFC 7239.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from steelyard.http.codec import Headers

# Always connection-level (RFC 9110 section 7.6.1), plus Proxy-Connection seen in the wild.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Request headers the proxy sets itself: whatever the client sent under these names is replaced.
_REPLACED = frozenset(
    {b"x-real-ip", b"x-forwarded-proto", b"x-forwarded-host", b"expect", b"content-length"}
)


def connection_tokens(connection: bytes | None) -> frozenset[bytes]:
    """Lowercased names listed in a Connection value, other than close and keep-alive."""
    if not connection:
        return frozenset()
    tokens = {t.strip().lower() for t in connection.split(b",")}
    tokens -= _CONNECTION_WORDS
    return frozenset(tokens)


_CONNECTION_WORDS = {b"close", b"keep-alive", b"upgrade", b""}


def _ip_for_forwarded(ip: str) -> str:
    return f'"[{ip}]"' if ":" in ip else ip


class RequestIds:
    """X-Request-ID values: 32 hex digits, unique per worker without a syscall per request."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex().encode()
        self._n = 0

    def next(self) -> bytes:
        self._n += 1
        return b"%s%016x" % (self._prefix, self._n)


_REQUEST_DROP = HOP_BY_HOP | _REPLACED
# Request headers the proxy appends to rather than passes on.
_MERGED = frozenset({b"x-forwarded-for", b"forwarded", b"via", b"x-request-id"})


def request_headers(
    headers: Headers,
    lnames: list[bytes],
    connection: bytes | None,
    *,
    client_ip: str,
    scheme: str,
    host: bytes | None,
    request_id: bytes | None,
    via: bool,
    forwarded: bool,
    upgrade: bytes | None,
    remove: frozenset[bytes] = frozenset(),
    set_: Iterable[tuple[bytes, bytes]] = (),
) -> tuple[Headers, bytes | None]:
    """Headers to send to the server, and the request id (the client's, or `request_id`).

    `lnames` are the header names lowercased (the codec has them), `connection` the value of
    the Connection header, whose listed names are hop-by-hop too.
    """
    drop = _REQUEST_DROP
    named = connection_tokens(connection)
    if named or remove:
        drop = drop | named | remove
    out: Headers = []
    xff: bytes | None = None
    fwd: bytes | None = None
    via_in: bytes | None = None
    rid: bytes | None = None
    for header, lname in zip(headers, lnames, strict=True):
        if lname in drop:
            continue
        if lname in _MERGED:
            value = header[1]
            if lname == b"x-forwarded-for":
                xff = value if xff is None else xff + b", " + value
                continue
            if lname == b"forwarded" and forwarded:
                fwd = value if fwd is None else fwd + b", " + value
                continue
            if lname == b"via" and via:
                via_in = value if via_in is None else via_in + b", " + value
                continue
            if lname == b"x-request-id":
                rid = value
        out.append(header)
    ip = client_ip.encode()
    out.append((b"X-Forwarded-For", ip if xff is None else xff + b", " + ip))
    out.append((b"X-Real-IP", ip))
    out.append((b"X-Forwarded-Proto", b"https" if scheme == "https" else b"http"))
    if host is not None:
        out.append((b"X-Forwarded-Host", host))
    if forwarded:
        part = f"for={_ip_for_forwarded(client_ip)};proto={scheme}".encode()
        if host is not None:
            part += b';host="' + host + b'"'
        out.append((b"Forwarded", part if fwd is None else fwd + b", " + part))
    if via:
        mine = b"1.1 steelyard"
        out.append((b"Via", mine if via_in is None else via_in + b", " + mine))
    if rid is None and request_id is not None:
        rid = request_id
        out.append((b"X-Request-ID", rid))
    if upgrade is not None:
        out.append((b"Connection", b"upgrade"))
        out.append((b"Upgrade", upgrade))
    for name, value in set_:
        lname = name.lower()
        out = [(n, v) for n, v in out if n.lower() != lname]
        if value:
            out.append((name, value))
    return out, rid


_RESPONSE_DROP = HOP_BY_HOP | {b"content-length"}


def response_headers(
    headers: Headers,
    lnames: list[bytes],
    connection: bytes | None,
    *,
    remove: frozenset[bytes] = frozenset(),
    set_: Iterable[tuple[bytes, bytes]] = (),
    upgrade: bool = False,
) -> Headers:
    """The server's headers without its connection-level ones, with the route's changes."""
    drop = _RESPONSE_DROP
    named = connection_tokens(connection)
    if named or remove or upgrade:
        drop = drop | named | remove
        if upgrade:
            drop = drop - {b"upgrade"}
    out = [h for h, lname in zip(headers, lnames, strict=True) if lname not in drop]
    for name, value in set_:
        lname = name.lower()
        out = [(n, v) for n, v in out if n.lower() != lname]
        if value:
            out.append((name, value))
    return out


def encode_head(first_line: bytes, headers: Headers) -> bytes:
    parts = [first_line]
    for name, value in headers:
        parts.append(name + b": " + value)
    parts.append(b"\r\n")
    return b"\r\n".join(parts)


def header_value(headers: Headers, lname: bytes) -> bytes | None:
    """The first value of a header, by lowercased name."""
    for name, value in headers:
        if name.lower() == lname:
            return value
    return None


def cookie_value(headers: Headers, cookie: bytes) -> bytes | None:
    prefix = cookie + b"="
    for name, value in headers:
        if name.lower() == b"cookie":
            for part in value.split(b";"):
                part = part.strip()
                if part.startswith(prefix):
                    return part[len(prefix) :]
    return None
