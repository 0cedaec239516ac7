"""Responses the proxy writes itself: errors, `return:` and redirects."""

from __future__ import annotations

from http import HTTPStatus

from steelyard.http.codec import Headers
from steelyard.http.headers import encode_head


def reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def status_line(status: int, phrase: bytes | None = None) -> bytes:
    return b"HTTP/1.1 %d %s" % (status, phrase if phrase is not None else reason(status))


def local_response(
    status: int,
    body: bytes | None = None,
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
    headers: Headers | None = None,
    close: bool = False,
    keep_alive_10: bool = False,
    head_only: bool = False,
) -> bytes:
    """A whole response. `body` None means the standard short text for the status."""
    if body is None:
        body = b"%d %s\n" % (status, reason(status))
    out: Headers = [(b"Server", b"steelyard")]
    if status not in (204, 304):
        out.append((b"Content-Type", content_type))
        out.append((b"Content-Length", str(len(body)).encode()))
    if headers:
        out.extend(headers)
    if close:
        out.append((b"Connection", b"close"))
    elif keep_alive_10:
        out.append((b"Connection", b"keep-alive"))
    head = encode_head(status_line(status), out)
    if head_only or status in (204, 304):
        return head
    return head + body
